//! Fluent's Forward protocol (v1), as Docker's `fluentd` log driver, Fluent
//! Bit, fluentd's `out_forward` and the fluent-logger libraries speak it:
//! MessagePack events on a TCP or unix stream, an ack per event on request.
//!
//! In flow order:
//! - [`msgpack`]: find one complete object in the stream, bounded; read it.
//! - [`forward`]: an object as a Forward event (Message, Forward,
//!   PackedForward, CompressedPackedForward), its entries and options.
//! - [`docker`]: an entry as the GELF message Docker's gelf driver sends for
//!   the same line, and the reassembly of lines Docker split.

pub mod docker;
pub mod forward;
pub mod msgpack;
