//! Rule packs: the TOML files security engineers write (format: `rules/README.md`), parsed into
//! [`RuleSet`] with every problem reported at once (file, line, key path).
//!
//! Loading is pure: [`RuleSet::from_sources`] takes `(file name, text)` pairs, so the packs
//! embedded in the binary ([`RuleSet::embedded`]) and a directory on disk
//! ([`RuleSet::load_dir`]) go through the same code. The set's [`RuleSet::version`] is a content
//! hash over every file, so two hosts with the same packs report the same version.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::normalize::ViewKind;
use crate::toml_reader::{ConfigError, Errors, Table};

/// The packs shipped in `rules/`, compiled into the binary: the default when no `rules_dir` is set.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("injection.toml", include_str!("../../rules/injection.toml")),
    ("jailbreak.toml", include_str!("../../rules/jailbreak.toml")),
    (
        "extraction.toml",
        include_str!("../../rules/extraction.toml"),
    ),
    ("indirect.toml", include_str!("../../rules/indirect.toml")),
    ("secrets.toml", include_str!("../../rules/secrets.toml")),
    ("pii.toml", include_str!("../../rules/pii.toml")),
];

/// Anomaly-score severity, CRS-style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Notice,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub const NAMES: &'static str = "critical, error, warning, notice";

    pub fn score(self) -> u32 {
        match self {
            Severity::Critical => 5,
            Severity::Error => 4,
            Severity::Warning => 3,
            Severity::Notice => 2,
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "critical" => Severity::Critical,
            "error" => Severity::Error,
            "warning" => Severity::Warning,
            "notice" => Severity::Notice,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
        }
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Adds its score towards the blocking threshold.
    Block,
    /// Recorded only.
    Flag,
    /// Matched text is replaced before forwarding.
    Mask,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Flag => "flag",
            Action::Mask => "mask",
        }
    }
}

/// Which text a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    System,
    User,
    Assistant,
    /// Tool / function role messages: tool output and retrieved documents.
    Tool,
    /// `arguments` of tool calls in assistant messages.
    ToolArgs,
    /// The model's reply: assistant text of a response, streamed or not.
    Output,
    /// `arguments` of the tool calls in a response, streamed or not.
    OutputToolArgs,
}

impl Target {
    /// The parts of a request (`any` in a pack means these; role weights are per input).
    pub const ALL: [Target; 5] = [
        Target::System,
        Target::User,
        Target::Assistant,
        Target::Tool,
        Target::ToolArgs,
    ];

    /// The parts of a response the output guard reads.
    pub const OUTPUTS: [Target; 2] = [Target::Output, Target::OutputToolArgs];

    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::System => "system",
            Target::User => "user",
            Target::Assistant => "assistant",
            Target::Tool => "tool",
            Target::ToolArgs => "tool_args",
            Target::Output => "output",
            Target::OutputToolArgs => "output_tool_args",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL
            .into_iter()
            .chain(Target::OUTPUTS)
            .find(|t| t.name() == s)
    }

    /// A part of a response rather than of a request.
    pub fn is_output(self) -> bool {
        matches!(self, Target::Output | Target::OutputToolArgs)
    }
}

/// Extra check on a regex match before it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// Payment-card checksum over the digits of the match.
    Luhn,
    /// An e-mail address outside the documentation domains: no label of its domain is
    /// `example`, and its top-level domain is not `test`, `invalid`, `localhost` or `example`
    /// (RFC 2606, RFC 6761). `deploy@backup.example.com` in a command line is not someone's
    /// address.
    Email,
    /// The value of an assignment (after its `:` or `=`) is not a reference to another name
    /// (`auth_password`, `settings.DB_PASSWORD`: letters, digits and `_`, with a `_` or `.`)
    /// nor a placeholder (`none`, `null`, `nil`, `true`, `false`, `undefined`).
    SecretValue,
}

impl Validator {
    pub fn check(self, matched: &str) -> bool {
        match self {
            Validator::Luhn => luhn(matched),
            Validator::Email => not_documentation_email(matched),
            Validator::SecretValue => secret_value(matched),
        }
    }

    pub fn parse(name: &str) -> Option<Validator> {
        match name {
            "luhn" => Some(Validator::Luhn),
            "email" => Some(Validator::Email),
            "secret_value" => Some(Validator::SecretValue),
            _ => None,
        }
    }
}

/// See [`Validator::Email`].
fn not_documentation_email(s: &str) -> bool {
    // Bytes, not `str` searches: a match is a few dozen bytes and `str`'s char searchers cost
    // more to set up than the scan.
    let b = s.as_bytes();
    let Some(at) = b.iter().rposition(|&c| c == b'@') else {
        return false;
    };
    let mut domain = &b[at + 1..];
    while let [rest @ .., b'.'] = domain {
        domain = rest;
    }
    let tld = domain.rsplit(|&c| c == b'.').next().unwrap_or_default();
    !domain
        .split(|&c| c == b'.')
        .any(|label| label.eq_ignore_ascii_case(b"example"))
        && ![&b"test"[..], b"invalid", b"localhost"]
            .iter()
            .any(|t| tld.eq_ignore_ascii_case(t))
}

/// See [`Validator::SecretValue`].
fn secret_value(s: &str) -> bool {
    let Some(pos) = s.find([':', '=']) else {
        return true;
    };
    let value = s[pos + 1..]
        .trim()
        .trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | ';' | ')' | '('));
    if ["none", "null", "nil", "true", "false", "undefined"]
        .iter()
        .any(|p| value.eq_ignore_ascii_case(p))
    {
        return false;
    }
    let identifier = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && value.contains(['_', '.'])
        && value.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        });
    !identifier
}

/// Luhn checksum over the ASCII digits of `s` (separators ignored); needs 12–19 digits.
pub fn luhn(s: &str) -> bool {
    // One pass, nothing allocated (a digit run is a candidate on every PII scan): the sum with
    // every second digit doubled counting from the first, and counting from the second; which
    // of them is Luhn's depends on the parity of the count, known at the end.
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let (mut count, mut from_first, mut from_second) = (0usize, 0u32, 0u32);
    for b in s.bytes().filter(u8::is_ascii_digit) {
        let d = usize::from(b - b'0');
        let (doubled, plain) = (DOUBLED[d], d as u32);
        if count % 2 == 0 {
            from_first += doubled;
            from_second += plain;
        } else {
            from_first += plain;
            from_second += doubled;
        }
        count += 1;
    }
    // Luhn doubles every second digit counting from the last: from the first digit when the
    // count is even, from the second when it is odd.
    let sum = if count % 2 == 0 {
        from_first
    } else {
        from_second
    };
    (12..=19).contains(&count) && sum.is_multiple_of(10)
}

/// Bit for a view kind in [`Rule::views`].
pub fn view_bit(kind: ViewKind) -> u8 {
    match kind {
        ViewKind::Folded => 1,
        ViewKind::Despaced => 2,
        ViewKind::Leet => 4,
        ViewKind::DespacedLeet => 8,
        ViewKind::Decoded { .. } => 16,
    }
}

const VIEW_NAMES: [(&str, u8); 5] = [
    ("folded", 1),
    ("despaced", 2),
    ("leet", 4),
    ("despaced_leet", 8),
    ("decoded", 16),
];

/// Name of a view kind, as in rule files and metrics.
pub fn view_name(kind: ViewKind) -> &'static str {
    match kind {
        ViewKind::Folded => "folded",
        ViewKind::Despaced => "despaced",
        ViewKind::Leet => "leet",
        ViewKind::DespacedLeet => "despaced_leet",
        ViewKind::Decoded { .. } => "decoded",
    }
}

/// Where a rule was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: Option<usize>,
    /// Key path of the rule inside its file, e.g. `rule[3]`.
    pub path: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.path),
            None => write!(f, "{}: {}", self.file, self.path),
        }
    }
}

/// One rule, as written.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub pack: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub paranoia: u8,
    /// Bit set of [`Target::bit`].
    pub targets: u8,
    pub action: Action,
    pub tags: Vec<String>,
    pub literals: Vec<String>,
    pub regexes: Vec<String>,
    /// Bit set of [`view_bit`].
    pub views: u8,
    pub validate: Option<Validator>,
    pub mask: Option<String>,
    pub must_match: Vec<String>,
    pub must_not_match: Vec<String>,
    pub origin: Origin,
}

impl Rule {
    pub fn reads(&self, target: Target) -> bool {
        self.targets & target.bit() != 0
    }

    pub fn sees(&self, kind: ViewKind) -> bool {
        self.views & view_bit(kind) != 0
    }

    /// The replacement text for a masked match.
    pub fn mask_text(&self) -> String {
        self.mask
            .clone()
            .unwrap_or_else(|| format!("[REDACTED:{}]", self.id))
    }

    /// The target a test case is scanned as: `user` when the rule reads it, else its first target.
    pub fn test_target(&self) -> Target {
        if self.reads(Target::User) {
            return Target::User;
        }
        Target::ALL
            .into_iter()
            .chain(Target::OUTPUTS)
            .find(|t| self.reads(*t))
            .unwrap_or(Target::User)
    }
}

/// A pack's header.
#[derive(Debug, Clone)]
pub struct PackInfo {
    pub name: String,
    pub title: String,
    pub description: String,
    pub file: String,
    pub rules: usize,
}

/// A problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackError {
    pub file: String,
    pub error: ConfigError,
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error.line {
            Some(line) => write!(
                f,
                "{}:{line}: {}: {}",
                self.file, self.error.path, self.error.message
            ),
            None if self.error.path.is_empty() => {
                write!(f, "{}: {}", self.file, self.error.message)
            }
            None => write!(
                f,
                "{}: {}: {}",
                self.file, self.error.path, self.error.message
            ),
        }
    }
}

impl PackError {
    pub fn new(file: &str, path: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            error: ConfigError {
                path: path.to_string(),
                line,
                message: message.into(),
            },
        }
    }
}

/// Every rule of every pack in a directory (or the embedded set).
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub packs: Vec<PackInfo>,
    pub rules: Vec<Rule>,
    /// Content hash over every file: `sha-<16 hex>` (BLAKE3).
    pub version: std::sync::Arc<str>,
    /// Where it came from: a directory path or `embedded`.
    pub source: String,
}

impl RuleSet {
    /// The packs compiled into the binary.
    pub fn embedded() -> Result<RuleSet, Vec<PackError>> {
        let sources: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        Self::from_sources("embedded", &sources)
    }

    /// Every `*.toml` file directly in `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, Vec<PackError>> {
        let shown = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![PackError::new(
                &shown,
                "",
                None,
                format!("cannot read rules directory: {e}"),
            )]
        })?;
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    errors.push(PackError::new(
                        &shown,
                        "",
                        None,
                        format!("cannot list: {e}"),
                    ));
                    continue;
                }
            };
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((name, text)),
                Err(e) => errors.push(PackError::new(&name, "", None, format!("cannot read: {e}"))),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if sources.is_empty() {
            return Err(vec![PackError::new(
                &shown,
                "",
                None,
                "no *.toml rule packs in this directory",
            )]);
        }
        sources.sort();
        Self::from_sources(&shown, &sources)
    }

    /// Parse `(file name, text)` pairs. Every problem in every file is returned together.
    pub fn from_sources(
        source: &str,
        files: &[(String, String)],
    ) -> Result<RuleSet, Vec<PackError>> {
        let mut errors = Vec::new();
        let mut packs = Vec::new();
        let mut rules: Vec<Rule> = Vec::new();
        let mut hasher = blake3::Hasher::new();
        for (name, text) in files {
            hasher.update(name.as_bytes());
            hasher.update(&[0]);
            hasher.update(&(text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
            match parse_pack(name, text) {
                Ok((info, mut pack_rules)) => {
                    packs.push(info);
                    rules.append(&mut pack_rules);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        let mut seen_packs: HashMap<&str, &str> = HashMap::new();
        for p in &packs {
            if let Some(other) = seen_packs.insert(&p.name, &p.file) {
                errors.push(PackError::new(
                    &p.file,
                    "pack.name",
                    None,
                    format!("pack name {:?} is also used by {other}", p.name),
                ));
            }
        }
        let mut seen: HashMap<&str, &Origin> = HashMap::new();
        for r in &rules {
            if let Some(first) = seen.insert(&r.id, &r.origin) {
                errors.push(PackError::new(
                    &r.origin.file,
                    &format!("{}.id", r.origin.path),
                    r.origin.line,
                    format!("duplicate rule id {:?} (first defined at {first})", r.id),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let hash = hasher.finalize();
        Ok(RuleSet {
            packs,
            rules,
            version: format!("sha-{}", &hash.to_hex()[..16]).into(),
            source: source.to_string(),
        })
    }
}

fn valid_id(id: &str) -> bool {
    let Some((prefix, number)) = id.split_once('-') else {
        return false;
    };
    !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_uppercase())
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

fn valid_pack_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parse one pack file.
pub fn parse_pack(file: &str, text: &str) -> Result<(PackInfo, Vec<Rule>), Vec<PackError>> {
    let wrap = |list: Vec<ConfigError>| -> Vec<PackError> {
        list.into_iter()
            .map(|error| PackError {
                file: file.to_string(),
                error,
            })
            .collect()
    };
    let doc = match text.parse::<toml_edit::ImDocument<String>>() {
        Ok(d) => d,
        Err(e) => {
            let mut errs = Errors::new(text);
            let span = e.span();
            errs.push("", span, format!("not valid TOML: {}", e.message()));
            return Err(wrap(errs.list));
        }
    };
    let mut errs = Errors::new(text);
    let mut root = Table::root(doc.as_table());
    let mut info = PackInfo {
        name: String::new(),
        title: String::new(),
        description: String::new(),
        file: file.to_string(),
        rules: 0,
    };
    match root.table(&mut errs, "pack") {
        Some(mut pack) => {
            match pack.string(&mut errs, "name") {
                Some(n) if valid_pack_name(&n) => info.name = n,
                Some(n) => errs.push(
                    "pack.name",
                    pack.value_span("name"),
                    format!("{n:?}: use lowercase letters, digits and '-'"),
                ),
                None => errs.push("pack.name", pack.span(), "missing"),
            }
            info.title = pack.string(&mut errs, "title").unwrap_or_default();
            info.description = pack.string(&mut errs, "description").unwrap_or_default();
            pack.finish(&mut errs);
        }
        None => errs.push(
            "pack",
            None,
            "missing [pack] table (name, title, description)",
        ),
    }
    let mut rules = Vec::new();
    for (i, mut t) in root.tables(&mut errs, "rule").into_iter().enumerate() {
        let path = format!("rule[{i}]");
        let line = errs.line_of(t.span());
        if let Some(rule) = parse_rule(&mut errs, &mut t, &path, file, line, &info.name) {
            rules.push(rule);
        }
        t.finish(&mut errs);
    }
    root.finish(&mut errs);
    if rules.is_empty() && errs.list.is_empty() {
        errs.push("rule", None, "a pack needs at least one [[rule]]");
    }
    if !errs.list.is_empty() {
        return Err(wrap(errs.list));
    }
    info.rules = rules.len();
    Ok((info, rules))
}

fn parse_rule(
    errs: &mut Errors<'_>,
    t: &mut Table<'_>,
    path: &str,
    file: &str,
    line: Option<usize>,
    pack: &str,
) -> Option<Rule> {
    let before = errs.list.len();
    let key = |k: &str| format!("{path}.{k}");
    // Only for keys that are absent: a present key of the wrong type already has its error.
    let required = |errs: &mut Errors<'_>, t: &Table<'_>, k: &str| {
        if t.value_span(k).is_none() {
            errs.push(&key(k), t.span(), "missing (required)");
        }
    };

    let id = t.string(errs, "id");
    match &id {
        Some(id) if !valid_id(id) => errs.push(
            &key("id"),
            t.value_span("id"),
            format!("{id:?}: rule ids look like PI-1001 (uppercase letters, '-', digits)"),
        ),
        None => required(errs, t, "id"),
        _ => {}
    }
    let title = t.string(errs, "title");
    if title.is_none() {
        required(errs, t, "title");
    }
    let description = t.string(errs, "description");
    if description.is_none() {
        required(errs, t, "description");
    }
    let severity = match t.string(errs, "severity") {
        Some(s) => {
            let parsed = Severity::parse(&s);
            if parsed.is_none() {
                errs.push(
                    &key("severity"),
                    t.value_span("severity"),
                    format!("{s:?}: expected one of {}", Severity::NAMES),
                );
            }
            parsed
        }
        None => {
            required(errs, t, "severity");
            None
        }
    };
    let paranoia = match t.uint(errs, "paranoia", 4) {
        Some(p @ 1..=4) => Some(p as u8),
        Some(p) => {
            errs.push(
                &key("paranoia"),
                t.value_span("paranoia"),
                format!("{p}: paranoia levels are 1 to 4"),
            );
            None
        }
        None => {
            required(errs, t, "paranoia");
            None
        }
    };
    let mut targets = 0u8;
    match t.string_list(errs, "targets") {
        Some(list) => {
            for (j, name) in list.iter().enumerate() {
                if name == "any" {
                    targets = Target::ALL.iter().fold(0, |acc, t| acc | t.bit());
                } else if let Some(target) = Target::parse(name) {
                    targets |= target.bit();
                } else {
                    errs.push(
                        &format!("{path}.targets[{j}]"),
                        t.value_span("targets"),
                        format!("{name:?}: expected one of system, user, assistant, tool, tool_args, any, output, output_tool_args"),
                    );
                }
            }
            if list.is_empty() {
                errs.push(
                    &key("targets"),
                    t.value_span("targets"),
                    "needs at least one target",
                );
            }
        }
        None => required(errs, t, "targets"),
    }
    let action = match t.string(errs, "action") {
        Some(a) => match a.as_str() {
            "block" => Some(Action::Block),
            "flag" => Some(Action::Flag),
            "mask" => Some(Action::Mask),
            _ => {
                errs.push(
                    &key("action"),
                    t.value_span("action"),
                    format!("{a:?}: expected one of block, flag, mask"),
                );
                None
            }
        },
        None => {
            required(errs, t, "action");
            None
        }
    };
    let tags = t.string_list(errs, "tags").unwrap_or_default();
    let literals = t.string_list(errs, "literals").unwrap_or_default();
    let regexes = t.string_list(errs, "regexes").unwrap_or_default();
    if literals.is_empty() && regexes.is_empty() {
        errs.push(
            path,
            t.span(),
            "a rule needs `literals` or `regexes` (or both)",
        );
    }
    for (j, lit) in literals.iter().enumerate() {
        if crate::normalize::fold(lit).trim().is_empty() {
            errs.push(
                &format!("{path}.literals[{j}]"),
                t.value_span("literals"),
                "empty literal",
            );
        }
    }
    for (j, re) in regexes.iter().enumerate() {
        if let Err(e) = regex_syntax::Parser::new().parse(re) {
            errs.push(
                &format!("{path}.regexes[{j}]"),
                t.value_span("regexes"),
                format!("invalid regex: {}", one_line(&e.to_string())),
            );
        }
    }
    let mut views = 0u8;
    match t.string_list(errs, "views") {
        Some(list) => {
            for (j, name) in list.iter().enumerate() {
                match VIEW_NAMES.iter().find(|(n, _)| n == name) {
                    Some((_, bit)) => views |= bit,
                    None => errs.push(
                        &format!("{path}.views[{j}]"),
                        t.value_span("views"),
                        format!("{name:?}: expected one of folded, despaced, leet, despaced_leet, decoded"),
                    ),
                }
            }
            if list.is_empty() {
                errs.push(
                    &key("views"),
                    t.value_span("views"),
                    "an empty list would never scan anything",
                );
            }
        }
        None => views = 0x1f,
    }
    let validate = match t.string(errs, "validate") {
        Some(v) => {
            let parsed = Validator::parse(&v);
            if parsed.is_none() {
                errs.push(
                    &key("validate"),
                    t.value_span("validate"),
                    format!("{v:?}: expected luhn, email or secret_value"),
                );
            }
            parsed
        }
        None => None,
    };
    if validate.is_some() && regexes.is_empty() {
        errs.push(
            &key("validate"),
            t.value_span("validate"),
            "validators check regex matches; this rule has no regexes",
        );
    }
    let mask = t.string(errs, "mask");
    if mask.is_some() && action != Some(Action::Mask) {
        errs.push(
            &key("mask"),
            t.value_span("mask"),
            "only rules with action = \"mask\" replace text",
        );
    }
    let must_match = t.string_list(errs, "must_match").unwrap_or_default();
    let must_not_match = t.string_list(errs, "must_not_match").unwrap_or_default();

    if errs.list.len() != before {
        return None;
    }
    Some(Rule {
        id: id?,
        pack: pack.to_string(),
        title: title?,
        description: description?,
        severity: severity?,
        paranoia: paranoia?,
        targets,
        action: action?,
        tags,
        literals,
        regexes,
        views,
        validate,
        mask,
        must_match,
        must_not_match,
        origin: Origin {
            file: file.to_string(),
            line,
            path: path.to_string(),
        },
    })
}

/// Regex errors span several lines with a caret diagram; keep the last line, which says what.
fn one_line(message: &str) -> String {
    message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[pack]
name = "demo"
title = "Demo"
description = "A pack for tests."

[[rule]]
id = "T-1"
title = "Override"
description = "Instruction override."
severity = "critical"
paranoia = 1
targets = ["user", "tool"]
action = "block"
tags = ["owasp-llm01"]
literals = ["ignore previous instructions"]
must_match = ["please ignore previous instructions"]
must_not_match = ["ignore the previous error"]
"#;

    #[test]
    fn a_good_pack_parses() {
        let (info, rules) = parse_pack("demo.toml", GOOD).unwrap();
        assert_eq!(info.name, "demo");
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(r.severity.score(), 5);
        assert!(r.reads(Target::User) && r.reads(Target::Tool) && !r.reads(Target::System));
        assert_eq!(r.views, 0x1f);
        assert_eq!(r.origin.line, Some(7));
    }

    #[test]
    fn every_problem_is_reported_with_file_line_and_path() {
        let bad = GOOD
            .replace("\"critical\"", "\"severe\"")
            .replace("paranoia = 1", "paranoia = 7")
            .replace("[\"user\", \"tool\"]", "[\"user\", \"web\"]")
            .replace("tags = [", "colour = \"red\"\ntags = [")
            .replace(
                "literals = [\"ignore previous instructions\"]",
                "regexes = ['(unclosed']",
            );
        let errs = parse_pack("demo.toml", &bad).unwrap_err();
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let all = shown.join("\n");
        assert!(
            all.contains("demo.toml:11: rule[0].severity: \"severe\""),
            "{all}"
        );
        assert!(all.contains("rule[0].paranoia"), "{all}");
        assert!(all.contains("rule[0].targets[1]: \"web\""), "{all}");
        assert!(all.contains("rule[0].colour: unknown key"), "{all}");
        assert!(all.contains("rule[0].regexes[0]: invalid regex"), "{all}");
        assert_eq!(errs.len(), 5, "{all}");
    }

    #[test]
    fn duplicate_ids_across_files_are_errors() {
        let files = vec![
            ("a.toml".to_string(), GOOD.to_string()),
            (
                "b.toml".to_string(),
                GOOD.replace("name = \"demo\"", "name = \"other\""),
            ),
        ];
        let errs = RuleSet::from_sources("test", &files).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].to_string().contains("duplicate rule id \"T-1\""),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn version_is_a_content_hash() {
        let a = vec![("a.toml".to_string(), GOOD.to_string())];
        let b = vec![("a.toml".to_string(), GOOD.replace("Override", "Overrides"))];
        let va = RuleSet::from_sources("x", &a).unwrap().version;
        assert_eq!(va, RuleSet::from_sources("y", &a).unwrap().version);
        assert_ne!(va, RuleSet::from_sources("x", &b).unwrap().version);
        assert!(va.starts_with("sha-") && va.len() == 20);
    }

    #[test]
    fn luhn_accepts_test_cards_and_rejects_near_misses() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(!luhn("1234"));
    }

    /// The one-pass checksum against the textbook one (collect the digits, double every second
    /// from the right) on every count from 0 to 24 digits, with separators between them.
    #[test]
    fn luhn_agrees_with_the_textbook_checksum() {
        fn textbook(s: &str) -> bool {
            let digits: Vec<u32> = s
                .bytes()
                .filter(u8::is_ascii_digit)
                .map(|b| u32::from(b - b'0'))
                .collect();
            let sum: u32 = digits
                .iter()
                .rev()
                .enumerate()
                .map(|(i, &d)| {
                    if i % 2 == 1 {
                        if d * 2 > 9 {
                            d * 2 - 9
                        } else {
                            d * 2
                        }
                    } else {
                        d
                    }
                })
                .sum();
            (12..=19).contains(&digits.len()) && sum.is_multiple_of(10)
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let (mut accepted, mut rejected) = (0, 0);
        for round in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let count = round % 25;
            let mut s = String::new();
            for k in 0..count {
                let r = x.rotate_left(k as u32 * 5);
                s.push(char::from(b'0' + (r % 10) as u8));
                if r & 0x300 == 0 {
                    s.push(if r & 0x400 == 0 { ' ' } else { '-' });
                }
            }
            let want = textbook(&s);
            assert_eq!(luhn(&s), want, "{s:?}");
            if want {
                accepted += 1
            } else {
                rejected += 1
            }
        }
        assert!(accepted > 500 && rejected > 500, "{accepted} / {rejected}");
    }

    #[test]
    fn documentation_e_mail_domains_are_not_addresses() {
        for (s, address) in [
            ("jane.doe@acme.io", true),
            ("deploy@backup.example.com", false),
            ("ops@EXAMPLE.org", false),
            ("a@host.example", false),
            ("a@mail.test", false),
            ("a@mail.TEST.", false),
            ("a@box.invalid", false),
            ("root@localhost", false),
            ("a@examples.com", true),
            ("a@test.com", true),
            ("no-at-sign", false),
        ] {
            assert_eq!(not_documentation_email(s), address, "{s}");
        }
    }

    #[test]
    fn not_toml_is_one_clear_error() {
        let errs = parse_pack("x.toml", "[pack\nname=").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().starts_with("x.toml:1: "), "{}", errs[0]);
    }
}
