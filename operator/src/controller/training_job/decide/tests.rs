use super::*;

fn deploy(yaml: &str) -> DeploySpec {
    serde_saphyr::from_str(yaml).unwrap()
}

fn status(metric: &str, value: f64) -> TrainingJobStatus {
    TrainingJobStatus {
        metrics: [(metric.to_string(), value)].into(),
        model: Some(PublishedModel { uri: "s3://m/model.onnx".into(), ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn the_deploy_gate_knows_which_way_each_metric_is_better() {
    let at_least = deploy("{modelDeployment: iris, when: {metric: accuracy, threshold: 0.9}}");
    assert!(gate(&status("accuracy", 0.9), &at_least).is_ok());
    let refused = gate(&status("accuracy", 0.85), &at_least).unwrap_err();
    assert_eq!(refused.reason, "BelowThreshold");
    assert_eq!(refused.message, "accuracy 0.8500 is below the threshold 0.9: not deployed");
    let at_most = deploy("{modelDeployment: iris, when: {metric: logLoss, threshold: 0.3}}");
    assert!(gate(&status("logLoss", 0.2), &at_most).is_ok());
    let refused = gate(&status("logLoss", 0.35), &at_most).unwrap_err();
    assert!(refused.message.contains("above the threshold"), "{}", refused.message);
    assert_eq!(gate(&status("f1", 0.99), &at_least).unwrap_err().reason, "MetricMissing");
    let mut none = status("accuracy", 1.0);
    none.model = None;
    assert_eq!(gate(&none, &at_least).unwrap_err().reason, "NoModel");
}
