//! Durations (`500ms`, `2s`, `5m`) and sizes (`64KiB`, `1MiB`). STUB.
