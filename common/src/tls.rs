//! TLS set-up shared by every binary.

/// Installs ring as rustls' process-wide crypto provider.
///
/// kube's client uses ring and object_store's HTTP client aws-lc-rs; with both compiled in, rustls cannot
/// pick a provider on its own and panics on the first TLS client. Call this before building any client.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tls_client_config_builds_after_install() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        let roots = rustls::RootCertStore::empty();
        let _ = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    }
}
