//! warden-guards: the sans-IO guard engine of Warden. It decides nothing about sockets or
//! Pingora: the proxy hands it text (prompts by role, streamed output chunks, tool-call
//! arguments) and gets back matches and verdicts, so every guard is testable with plain calls.
//!
//! Pipeline for inputs: normalise into views → scan every view with the compiled rule packs
//! (one Aho-Corasick automaton for literals, one regex-automata multi-pattern engine) → score.
//! Outputs are scanned incrementally across SSE chunks. Rule-pack compiler, input scanner,
//! streaming output scanner, canaries, tool-call checks and the classifier are still to come.
//!
//! Modules:
//! - [`normalize`]: the input normaliser; produces the folded, despaced, leet and decoded views
//!   of a text, each with a map back to byte spans of the original, under documented bounds.

pub mod normalize;

pub use normalize::{Encoding, Limits, Normalizer, View, ViewKind, Views};
