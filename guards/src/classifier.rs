//! The input guard's second layer: a prompt-injection classifier scores every text of a request
//! that the rules did not already block, and its probability joins the rules' anomaly score.
//!
//! The model itself lives behind [`Classify`] (the proxy implements it on ONNX Runtime, with
//! `warden_inference::classifier`), so this crate stays free of it and its tests can drive the
//! fusion with any scores.
//!
//! Fusion (CRS-style, like a rule): the margin of a text's probability over its role's threshold
//! `t`, in log-odds, `m = logit(p) - logit(t)`, places it in a band that acts as a rule of that
//! paranoia level and severity would:
//!
//! | band | paranoia | severity (points) |
//! |---|---|---|
//! | `m ≥ 0` (`p ≥ t`) | 2 | critical (5) |
//! | `m ≥ -1.5` | 3 | error (4) |
//! | `m ≥ -3` | 4 | warning (3) |
//!
//! times the role's weight, like any rule. The classifier is a paranoia-2 layer: its false
//! positives on ordinary text run well above the paranoia-1 rules' (README: The classifier
//! layer), so with the default policy (block at 5 from paranoia-1 rules, detect to paranoia 2) a
//! text at or over `t` is flagged, counted and recorded; a tenant that blocks at paranoia 2
//! (`blocking_paranoia = 2`) blocks on it alone, and the lower bands count for tenants that
//! detect at paranoia 3 and 4. `t` is the model's shipped threshold for the role unless the
//! tenant sets one.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::normalize::Normalizer;
use crate::pack::Target;

/// How the classifier appears among rule ids (`rule_ids`, `prompt_blocked` errors, events).
pub const RULE_ID: &str = "classifier";

/// What a classifier says about one text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Injection probability: the highest of the windows scored.
    pub score: f32,
    /// The window that gave it (0 = the first).
    pub window: usize,
    /// Windows scored, and windows the text has (more than are scored when the classifier
    /// bounds the windows per text).
    pub scored: usize,
    pub windows: usize,
    /// The deadline passed before every window meant to be scored was.
    pub deadline: bool,
}

impl Scored {
    /// Every window was scored.
    pub fn complete(&self) -> bool {
        self.scored == self.windows
    }
}

/// Why a text has no score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifyError {
    /// The request's deadline passed before this text was scored.
    Deadline,
    /// The model failed.
    Failed(String),
}

/// Per text, in the order given to [`Classify::start`].
pub type Results = Vec<Result<Scored, ClassifyError>>;

/// A loaded classifier.
pub trait Classify: Send + Sync {
    /// The model's own threshold for text of this role (its shipped operating point).
    fn threshold(&self, target: Target) -> f32;
    /// Starts scoring `texts`, each read in its role (retrieved content is marked as such for
    /// the model), and returns at once; the scores are the [`Pending`]'s, by `deadline`.
    fn start(&self, texts: &[(Target, &str)], deadline: Instant) -> Box<dyn Pending>;
    /// Windows waiting for the classifier now, all requests together (0 where it does not
    /// queue).
    fn waiting(&self) -> usize {
        0
    }
}

/// Scores on their way.
pub trait Pending: Send + Sync {
    /// Blocks until every text is scored or the deadline passed; what was not scored by then
    /// says so ([`ClassifyError::Deadline`], [`Scored::deadline`]).
    fn wait(self: Box<Self>) -> Results;
    /// [`Pending::wait`] without blocking the thread.
    fn wait_async(self: Box<Self>) -> Pin<Box<dyn Future<Output = Results> + Send>>;
}

/// Scores known already (a classifier that scores on the caller's thread).
pub struct Ready(pub Results);

impl Pending for Ready {
    fn wait(self: Box<Self>) -> Results {
        self.0
    }

    fn wait_async(self: Box<Self>) -> Pin<Box<dyn Future<Output = Results> + Send>> {
        Box::pin(std::future::ready(self.0))
    }
}

/// What happens to a request whose texts the classifier could not score (failure or deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Decide on the rules alone; the response says `x-warden-guard-degraded`.
    #[default]
    FailOpen,
    /// Refuse the request (503 `guard_unavailable`).
    FailClosed,
}

impl OnError {
    pub const NAMES: &'static str = "\"fail_open\" or \"fail_closed\"";

    pub fn parse(s: &str) -> Option<OnError> {
        match s {
            "fail_open" => Some(OnError::FailOpen),
            "fail_closed" => Some(OnError::FailClosed),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OnError::FailOpen => "fail_open",
            OnError::FailClosed => "fail_closed",
        }
    }
}

/// A tenant's classifier settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierPolicy {
    /// Run the classifier for this tenant (when one is loaded).
    pub enabled: bool,
    /// Threshold per role (indexed by `Target as usize`); `None`: the model's own.
    pub thresholds: [Option<f32>; 7],
    pub on_error: OnError,
    /// How long the classifier may take for one request, all its texts together.
    pub deadline: Duration,
}

impl Default for ClassifierPolicy {
    fn default() -> Self {
        ClassifierPolicy {
            enabled: true,
            thresholds: [None; 7],
            on_error: OnError::default(),
            deadline: Duration::from_millis(1000),
        }
    }
}

/// The roles whose texts are classified: every input text but earlier assistant turns (the
/// model's own words, which the rules still read).
pub fn classifies(target: Target) -> bool {
    matches!(
        target,
        Target::System | Target::User | Target::Tool | Target::ToolArgs
    )
}

/// The classifier's finding on a request: the text whose score stood highest over its role's
/// threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Classification {
    pub score: f32,
    /// The threshold it was held to.
    pub threshold: f32,
    /// Index of the message (as given to [`Policy::inspect`]) and its role.
    pub message: usize,
    pub target: Target,
    /// The window of that text that scored highest (of the decoded blob's text, with `blob`).
    pub window: usize,
    /// The blob of that text whose decoded text scored it (0 = the first the normaliser decoded),
    /// or `None` for the text itself.
    pub blob: Option<usize>,
    /// Every window of every classified text was scored.
    pub complete: bool,
    /// Points added to the verdict (0 below the bands or above the tenant's detection level).
    pub points: u32,
    /// The points count towards blocking.
    pub blocking: bool,
}

impl Classification {
    /// Log-odds margin over the threshold.
    pub fn margin(&self) -> f32 {
        logit(self.score) - logit(self.threshold)
    }
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// `(paranoia, severity points)` of a log-odds margin, or `None` below every band.
pub fn band(margin: f32) -> Option<(u8, u32)> {
    if margin >= 0.0 {
        Some((2, 5))
    } else if margin >= -1.5 {
        Some((3, 4))
    } else if margin >= -3.0 {
        Some((4, 3))
    } else {
        None
    }
}

/// The outcome of classifying a request's texts.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    /// Every classified text scored (some perhaps on part of their windows).
    Scored(Classification),
    /// Nothing to classify (no text in a classified role).
    Nothing,
    /// Some text could not be scored; `partial` is what the scored ones gave.
    Failed {
        error: ClassifyError,
        partial: Option<Classification>,
    },
}

/// Decoded blobs of one text read by the classifier, besides the text: a window each or more,
/// and an encoded instruction is one blob or two.
pub const MAX_DECODED_TEXTS: usize = 2;

/// `(message index, decoded blob, role, threshold)` of a text given to the classifier.
type Meta = (usize, Option<usize>, Target, f32);

/// A request's texts on their way through the classifier ([`start_request`]).
pub struct Classifying {
    /// What each text given to the classifier is.
    texts: Vec<Meta>,
    pending: Option<Box<dyn Pending>>,
}

/// Starts classifying `texts` (`(role, text)`, in the order given to [`crate::Policy::inspect`])
/// under `policy`, each as its folded text (case, width, homoglyphs and invisible characters
/// undone by `normalizer`) and the folded texts of its first [`MAX_DECODED_TEXTS`] decoded
/// blobs, with the deadline `policy.deadline` after `started`. Returns once the
/// texts are queued (the classifier cuts them into windows on this thread).
pub fn start_request(
    classifier: &dyn Classify,
    policy: &ClassifierPolicy,
    normalizer: &Normalizer,
    texts: &[(Target, &str)],
    started: Instant,
) -> Classifying {
    let mut meta = Vec::new();
    let mut folded = Vec::new();
    for (i, (target, text)) in texts.iter().enumerate() {
        if !classifies(*target) {
            continue;
        }
        let f = normalizer.folded_text(text);
        if f.trim().is_empty() {
            continue;
        }
        let threshold =
            policy.thresholds[*target as usize].unwrap_or_else(|| classifier.threshold(*target));
        let decoded = normalizer.decoded_texts(text, MAX_DECODED_TEXTS);
        meta.push((i, None, *target, threshold));
        folded.push((*target, f));
        // (A decoded view is never blank: the normaliser drops a blob that folds to nothing.)
        for (k, d) in decoded.into_iter().enumerate() {
            meta.push((i, Some(k), *target, threshold));
            folded.push((*target, d));
        }
    }
    let pending = (!folded.is_empty()).then(|| {
        let refs: Vec<(Target, &str)> = folded.iter().map(|(t, f)| (*t, f.as_str())).collect();
        classifier.start(&refs, started + policy.deadline)
    });
    Classifying {
        texts: meta,
        pending,
    }
}

impl Classifying {
    /// Blocks for the classifier's finding.
    pub fn wait(self) -> Classified {
        let results = self.pending.map(|p| p.wait()).unwrap_or_default();
        conclude(&self.texts, results)
    }

    /// The classifier's finding, without blocking the thread.
    pub async fn wait_async(self) -> Classified {
        let results = match self.pending {
            Some(p) => p.wait_async().await,
            None => Vec::new(),
        };
        conclude(&self.texts, results)
    }
}

/// The text with the largest margin over its role's threshold, with every failure reported.
fn conclude(texts: &[Meta], results: Results) -> Classified {
    let mut best: Option<Classification> = None;
    let mut complete = true;
    let mut error: Option<ClassifyError> = None;
    for (&(message, blob, target, threshold), r) in texts.iter().zip(results) {
        let s = match r {
            Ok(s) => s,
            Err(e) => {
                // A model failure says more than a missed deadline.
                if error.is_none() || matches!(e, ClassifyError::Failed(_)) {
                    error = Some(e);
                }
                continue;
            }
        };
        complete &= s.complete();
        if s.deadline && error.is_none() {
            error = Some(ClassifyError::Deadline);
        }
        let c = Classification {
            score: s.score,
            threshold,
            message,
            target,
            window: s.window,
            blob,
            complete: true,
            points: 0,
            blocking: false,
        };
        if best.is_none_or(|b| c.margin() > b.margin()) {
            best = Some(c);
        }
    }
    match (error, best) {
        (Some(error), best) => Classified::Failed {
            error,
            partial: best.map(|b| Classification {
                complete: false,
                ..b
            }),
        },
        (None, Some(mut b)) => {
            b.complete = complete;
            Classified::Scored(b)
        }
        (None, None) => Classified::Nothing,
    }
}

/// [`start_request`] and wait: the classifier's finding on `texts`.
pub fn classify_request(
    classifier: &dyn Classify,
    policy: &ClassifierPolicy,
    normalizer: &Normalizer,
    texts: &[(Target, &str)],
    started: Instant,
) -> Classified {
    start_request(classifier, policy, normalizer, texts, started).wait()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Decision, Message, Policy, Verdict};
    use crate::{Engine, RuleSet};

    /// Scores by substring, failing or missing the deadline on demand.
    struct Fixed;
    impl Classify for Fixed {
        fn threshold(&self, _target: Target) -> f32 {
            0.9
        }
        fn start(&self, texts: &[(Target, &str)], _deadline: Instant) -> Box<dyn Pending> {
            let score = |text: &str| {
                if text.contains("fail") {
                    return Err(ClassifyError::Failed("boom".into()));
                }
                if text.contains("slow") {
                    return Err(ClassifyError::Deadline);
                }
                let score = if text.contains("high") {
                    0.99
                } else if text.contains("mid") {
                    0.8
                } else {
                    0.01
                };
                Ok(Scored {
                    score,
                    window: 0,
                    scored: 1,
                    windows: 1,
                    deadline: false,
                })
            };
            Box::new(Ready(texts.iter().map(|(_, t)| score(t)).collect()))
        }
    }

    fn run(texts: &[(Target, &str)], policy: &Policy, cp: &ClassifierPolicy) -> Verdict {
        // Compiled once: in a debug build the shipped packs take seconds.
        static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
        let engine = ENGINE.get_or_init(|| Engine::compile(RuleSet::embedded().unwrap()).unwrap());
        let msgs: Vec<Message<'_>> = texts
            .iter()
            .map(|(target, text)| Message {
                target: *target,
                text,
            })
            .collect();
        let mut v = policy.inspect(engine, &msgs, None);
        if let Classified::Scored(c) =
            classify_request(&Fixed, cp, engine.normalizer(), texts, Instant::now())
        {
            policy.fuse(&mut v, c);
        }
        v
    }

    #[test]
    fn decoded_blobs_are_read_as_texts_of_their_role() {
        use base64::Engine as _;
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let cp = ClassifierPolicy::default();
        let classify = |texts: &[(Target, &str)]| match classify_request(
            &Fixed,
            &cp,
            &Normalizer::default(),
            texts,
            Instant::now(),
        ) {
            Classified::Scored(c) => c,
            other => panic!("{other:?}"),
        };
        // The plain text scores low; its second decoded blob scores high and names itself.
        let text = format!(
            "Decode both and do what they say: {} and {}",
            b64("an ordinary sentence here"),
            b64("a high priority instruction")
        );
        let c = classify(&[(Target::User, "hello"), (Target::Tool, &text)]);
        assert_eq!((c.message, c.target, c.blob), (1, Target::Tool, Some(1)));
        assert_eq!(c.score, 0.99);
        // The text itself scoring wins over its blobs at the same score; no blob: `None`.
        let text = format!("a high one {}", b64("a high priority instruction"));
        assert_eq!(classify(&[(Target::User, &text)]).blob, None);
        assert_eq!(classify(&[(Target::User, "plain words")]).blob, None);
        // Only the first MAX_DECODED_TEXTS blobs of a text are read.
        let blobs: Vec<String> = (0..MAX_DECODED_TEXTS)
            .map(|k| b64(&format!("ordinary sentence number {k}")))
            .chain([b64("a high priority instruction")])
            .collect();
        let c = classify(&[(Target::User, &blobs.join(" "))]);
        assert_eq!((c.score, c.blob), (0.01, None));
    }

    #[test]
    fn bands_follow_the_margin_and_the_tenants_paranoia() {
        let p = Policy::default();
        let cp = ClassifierPolicy::default();
        // Over the threshold, default policy (blocking at paranoia 1): flagged, recorded.
        let v = run(&[(Target::User, "a high one")], &p, &cp);
        assert_eq!(v.decision, Decision::Flag);
        assert_eq!(v.classifier.unwrap().points, 5);
        assert!(v.rule_ids().contains(&"classifier"), "{:?}", v.rule_ids());
        // Blocking at paranoia 2: blocks alone, and the rule ids say so.
        let pl2 = Policy {
            blocking_paranoia: 2,
            ..Policy::default()
        };
        let v = run(&[(Target::User, "a high one")], &pl2, &cp);
        assert_eq!(v.decision, Decision::Block);
        assert_eq!(v.rule_ids(), vec!["classifier"]);
        // 0.8 against 0.9: margin -0.81, band 3: ignored unless the tenant detects at 3.
        assert_eq!(
            run(&[(Target::User, "a mid one")], &pl2, &cp).decision,
            Decision::Allow
        );
        let pl3 = Policy {
            detection_paranoia: 3,
            blocking_paranoia: 3,
            ..Policy::default()
        };
        let v = run(&[(Target::User, "a mid one")], &pl3, &cp);
        assert_eq!(v.decision, Decision::Flag);
        assert_eq!(v.classifier.unwrap().points, 4);
        // Tool weight 2: 4 × 2 = 8 ≥ 5 blocks.
        assert_eq!(
            run(&[(Target::Tool, "a mid one")], &pl3, &cp).decision,
            Decision::Block
        );
        // A lower role threshold moves the band.
        let mut low = ClassifierPolicy::default();
        low.thresholds[Target::User as usize] = Some(0.7);
        assert_eq!(
            run(&[(Target::User, "a mid one")], &pl2, &low).decision,
            Decision::Block
        );
        // Earlier assistant turns are not classified.
        assert_eq!(
            run(&[(Target::Assistant, "a high one")], &p, &cp).decision,
            Decision::Allow
        );
        assert_eq!(
            run(&[(Target::User, "plain")], &p, &cp).decision,
            Decision::Allow
        );
    }

    #[test]
    fn failures_and_deadlines_are_reported_with_what_was_scored() {
        let cp = ClassifierPolicy {
            deadline: Duration::from_millis(10),
            ..ClassifierPolicy::default()
        };
        let texts = [(Target::User, "high"), (Target::User, "fail")];
        match classify_request(&Fixed, &cp, &Normalizer::default(), &texts, Instant::now()) {
            Classified::Failed { error, partial } => {
                assert_eq!(error, ClassifyError::Failed("boom".into()));
                assert_eq!(partial.unwrap().score, 0.99);
                assert!(!partial.unwrap().complete);
            }
            other => panic!("{other:?}"),
        }
        // A missed deadline keeps what was scored; a failure says more than a deadline.
        let texts = [(Target::User, "slow"), (Target::User, "high")];
        match classify_request(&Fixed, &cp, &Normalizer::default(), &texts, Instant::now()) {
            Classified::Failed {
                error: ClassifyError::Deadline,
                partial: Some(p),
            } => assert_eq!((p.score, p.message), (0.99, 1)),
            other => panic!("{other:?}"),
        }
        let texts = [(Target::User, "slow"), (Target::User, "fail")];
        assert!(matches!(
            classify_request(&Fixed, &cp, &Normalizer::default(), &texts, Instant::now()),
            Classified::Failed {
                error: ClassifyError::Failed(_),
                partial: None
            }
        ));
        assert_eq!(
            classify_request(
                &Fixed,
                &cp,
                &Normalizer::default(),
                &[(Target::Assistant, "x")],
                Instant::now()
            ),
            Classified::Nothing
        );
    }
}
