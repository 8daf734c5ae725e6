//! warden-guards: the sans-IO guard engine of Warden. It decides nothing about sockets or
//! Pingora: the proxy hands it text (prompts by role, tool output, tool-call arguments) and gets
//! back matches and verdicts, so every guard is testable with plain calls.
//!
//! Pipeline for inputs: normalise into views → scan every view with the compiled rule packs
//! (one Aho-Corasick DFA for literals and regex prefixes, relaxed lazy DFAs for the regexes,
//! the exact regexes only on candidates) → score under the tenant's policy, within its budget.
//! Pipeline for outputs ([`stream`]): the folded view of each piece of a reply, scanned with
//! the rules that read an output, released as soon as no match could still cross it; leaks of
//! the system prompt and protected strings ([`leak`], with a sentence encoder's help for
//! paraphrases: [`paraphrase`]). The second input layer, a prompt-injection classifier whose
//! probability joins the rules' score, is [`classifier`] (the model runs in the proxy).
//!
//! Modules:
//! - [`normalize`]: the input normaliser; produces the folded, despaced, leet and decoded views
//!   of a text, each with a map back to byte spans of the original, under documented bounds.
//! - [`pack`]: rule-pack files (`rules/README.md`) parsed into a [`RuleSet`] with every error.
//! - [`engine`]: a [`RuleSet`] compiled for scanning in time linear in the text, whatever its
//!   script; scanning, with the work it cost counted ([`Work`]).
//! - [`policy`]: CRS-style anomaly scoring, paranoia levels, exclusions, role weights, the
//!   per-request [`Budget`] → [`Verdict`].
//! - [`lint`], [`eval`]: `warden rules lint` and `warden rules eval`.
//! - [`tools`]: the tenant's tool allowlist and the shape of the `tools` a request declares.
//! - [`toml_reader`]: the strict, error-collecting TOML reader shared with the proxy's config.

mod bitmap;
pub mod classifier;
pub mod engine;
pub mod eval;
pub mod grounding;
pub mod leak;
pub mod lint;
pub mod normalize;
pub mod output_eval;
pub mod pack;
pub mod paraphrase;
pub mod policy;
pub mod refusal;
pub mod stream;
pub mod toml_reader;
pub mod tool_calls;
pub mod tools;

pub use engine::{Engine, Hit, OutputPlan, TestFailure, TextScan, Work};
pub use normalize::{Encoding, Limits, Normalizer, View, ViewKind, Views};
pub use pack::{Action, RuleSet, Severity, Target};
pub use policy::{Budget, Decision, Exclusions, Message, OnOversize, Policy, Verdict};
pub use stream::{OutputScanner, Step};
