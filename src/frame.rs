//! RFC 6455 frame-header scanner. STUB (splice helper).
