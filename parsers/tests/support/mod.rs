pub mod go_gelf;
