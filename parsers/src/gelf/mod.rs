//! GELF: chunk reassembly and JSON parsing (GELF 1.1, with Graylog's
//! leniency). Decompression lives in [`crate::decompress`].

mod bookkeeping;
mod chunk;
mod message;

pub use chunk::{
    CHUNK_HEADER_LEN, CHUNK_MAGIC, ChunkError, ChunkHeader, ChunkOutcome, DroppedMessages,
    Reassembler, Sender, is_chunk, parse_chunk,
};
pub use message::{FieldValue, GelfError, GelfField, GelfMessage, parse_gelf, parse_gelf_lossy};
