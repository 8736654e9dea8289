"""Access-log analytics: format compiler, attribution, windows, tailer."""
