"""The task classes (one per task, `base.Task`), their registry and config sections, the multi-task
composition, and the config -> backbone builder they share."""
