//! XDP programs assembled in Rust (placeholder: being written).
