//! A model trained by mizzen-train, served by mizzen-serve: the server predicts what the trainer predicted
//! on the holdout rows, through the numeric `input` and the string `categories` inputs.

mod common;

use common::Serve;
use mizzen_common::training::{DatasetConfig, TrainConfig};
use mizzen_train::prep::Classes;

/// Rows of (x1, x2, colour, label) with a rule the model can learn; deterministic.
fn rows(n: usize) -> Vec<(f64, f64, &'static str, &'static str)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (a, b, noise) = (next() * 4.0 - 2.0, next() * 10.0, next());
            let colour = ["red", "green", "blue"][(next() * 3.0) as usize % 3];
            let score = a + 0.2 * b - 1.0 + if colour == "red" { 1.5 } else { 0.0 } + noise - 0.5;
            let label = if score > 1.0 {
                "high"
            } else if score > -0.5 {
                "mid"
            } else {
                "low"
            };
            (a, b, colour, label)
        })
        .collect()
}

#[tokio::test]
async fn mizzen_serve_predicts_what_the_trainer_predicted() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(600);
    let mut csv = String::from("x1,x2,colour,tier\n");
    for (a, b, c, l) in &data {
        csv.push_str(&format!("{a},{b},{c},{l}\n"));
    }
    let path = dir.path().join("data.csv");
    std::fs::write(&path, csv).unwrap();
    let config = TrainConfig {
        dataset: DatasetConfig {
            uri: path.display().to_string(),
            format: None,
            label: "tier".into(),
            features: None,
            categorical: vec![],
            feature_set: None,
        },
        algorithm: mizzen_common::training::Algorithm::Mlp,
        task: None,
        hyperparameters: [(mizzen_common::training::Hyperparameter::HiddenLayers, "16,8".to_string())].into(),
        trials: vec![],
        holdout_fraction: 0.25,
        split_seed: 3,
        output_uri: dir.path().join("model").display().to_string(),
        experiment: None,
        requested_by: None,
    };
    let (model, trained) = mizzen_train::train::run(&config, None, &[], None).await.expect("training");
    let Some(Classes::Str(classes)) = &model.classes else { panic!("string classes expected") };

    let mut serve = Serve::spawn_uri(&trained.model_uri, "tier", &[]);
    serve.wait_ready(std::time::Duration::from_secs(30));
    let holdout: Vec<_> = model.holdout_rows.iter().map(|&r| data[r as usize]).collect();
    let n = holdout.len();
    let body = serde_json::json!({
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [n, 2],
             "data": holdout.iter().flat_map(|r| [r.0, r.1]).collect::<Vec<_>>()},
            {"name": "categories", "datatype": "BYTES", "shape": [n, 1],
             "data": holdout.iter().map(|r| r.2).collect::<Vec<_>>()},
        ]
    });
    let response = serve.post("/v2/models/tier/infer", body.to_string().as_bytes());
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let json = response.json();
    let output = |name: &str| {
        json["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("{json}"))
    };
    let probabilities: Vec<f64> =
        output("probabilities")["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let labels: Vec<&str> =
        output("label")["data"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(output("probabilities")["shape"], serde_json::json!([n, classes.len()]));
    assert_eq!(probabilities.len(), model.holdout_predictions.len());
    for (i, (served, trained)) in probabilities.iter().zip(&model.holdout_predictions).enumerate() {
        assert!(
            (served - trained).abs() < 1e-5,
            "row {} class {}: served {served}, trained {trained}",
            i / 3,
            i % 3
        );
    }
    for (i, label) in labels.iter().enumerate() {
        let row = &model.holdout_predictions[i * classes.len()..(i + 1) * classes.len()];
        let best = (0..row.len()).fold(0, |b, k| if row[k] > row[b] { k } else { b });
        assert_eq!(*label, classes[best], "row {i}");
    }
    // The trainer's holdout accuracy is what the served labels score.
    let correct = labels.iter().zip(&holdout).filter(|(l, r)| **l == r.3).count();
    assert_eq!(correct as f64 / n as f64, model.metrics["accuracy"]);
}
