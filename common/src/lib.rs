//! What every Mizzen binary shares: logging ([`telemetry`]), graceful shutdown ([`shutdown`]) and reading
//! artifacts from storage URIs ([`storage`]).

pub mod metrics;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod training;
