//! The audit event of a request: prompt identities computed on admission (keyed hashes of the
//! normalised texts, never the texts), and the [`warden_telemetry::Event`] assembled in
//! `logging` from the request context.
//!
//! Normalisation for hashing is the guard's `fold` (NFKC, case fold, invisible characters
//! stripped, homoglyphs folded, whitespace collapsed), so trivially re-typed copies of a prompt
//! share a hash. The whole-prompt hash is over the folded texts in body order, each as
//! `role:text`, joined with `\n`; the system-prompt hash over the client's system/developer texts
//! (before any pinned prompt); one message hash per text.

use warden_guards::normalize::fold;
use warden_guards::Target;
use warden_telemetry::{Hasher, KeyedHash};

/// Hashes identifying a request's prompt.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    pub prompt: Option<KeyedHash>,
    pub system_prompt: Option<KeyedHash>,
    pub messages: Vec<KeyedHash>,
}

/// Hash the texts of a request.
pub fn identities(hasher: &Hasher, texts: &[(Target, &str)]) -> Identities {
    let mut whole = String::new();
    let mut system = String::new();
    let mut messages = Vec::with_capacity(texts.len());
    for (target, text) in texts {
        let folded = fold(text);
        let role = target.name();
        messages.push(hasher.message(role, &folded));
        if !whole.is_empty() {
            whole.push('\n');
        }
        whole.push_str(role);
        whole.push(':');
        whole.push_str(&folded);
        if *target == Target::System {
            if !system.is_empty() {
                system.push('\n');
            }
            system.push_str(&folded);
        }
    }
    Identities {
        prompt: (!texts.is_empty()).then(|| hasher.prompt(&whole)),
        system_prompt: (!system.is_empty()).then(|| hasher.system_prompt(&system)),
        messages,
    }
}

/// The texts as the upstream receives them (masks applied), for tenants that opted in.
pub fn raw_prompt(texts: &[(Target, &str)]) -> String {
    let mut out = String::new();
    for (target, text) in texts {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(target.name());
        out.push_str(": ");
        out.push_str(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retyped_copies_share_hashes_and_roles_matter() {
        let h = Hasher::ephemeral();
        let a = identities(
            &h,
            &[
                (Target::System, "Be brief."),
                (Target::User, "Hello  WORLD"),
            ],
        );
        let b = identities(
            &h,
            &[
                (Target::System, "be brief."),
                (Target::User, "ｈｅｌｌｏ world"),
            ],
        );
        assert_eq!(a.prompt, b.prompt);
        assert_eq!(a.system_prompt, b.system_prompt);
        assert_eq!(a.messages, b.messages);
        let c = identities(
            &h,
            &[(Target::User, "Be brief."), (Target::User, "Hello WORLD")],
        );
        assert_ne!(a.prompt, c.prompt);
        assert!(c.system_prompt.is_none());
        assert!(a.prompt.is_some_and(|p| p.to_hex().len() == 64));
    }
}
