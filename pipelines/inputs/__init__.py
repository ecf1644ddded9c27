"""Record -> batch: one tf.data input pipeline per task, used by training, evaluation, tests and benches."""
