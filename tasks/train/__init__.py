"""Stage `train`: one variant on DATA -> an MLflow run and a checkpoint folder. `config` (settings),
`loop` (the trainer), `batches` (samples and samplers), `state` (resumable epochs), `evaluate`."""
