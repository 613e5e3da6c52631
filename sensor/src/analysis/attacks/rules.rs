//! The rules kept as data (rules.toml), compiled once into one [`RegexSet`].
//!
//! The `regex` crate runs in time linear in the input (no back-tracking), so no rule can hang
//! on a hostile value; one set scans a value once for every rule.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;

use super::{AttackClass, AttacksError, points::Kind};

/// The built-in rules.
pub const RULES_TOML: &str = include_str!("rules.toml");

/// Compiled programs may take this much memory (each, and the set): the rules are a few dozen
/// alternations, far below; a bound keeps a bad edit from building a huge automaton.
const SIZE_LIMIT: usize = 32 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rule: Vec<RuleSpec>,
}

/// One rule as written in rules.toml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub class: AttackClass,
    pub points: Vec<String>,
    pub pattern: String,
    #[serde(default)]
    pub must_match: Vec<String>,
    #[serde(default)]
    pub must_not_match: Vec<String>,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub class: AttackClass,
    /// [`Kind::bit`]s of the points it applies to.
    pub kinds: u16,
    /// The same pattern alone: where it matched, for the excerpt (only run after the set hit).
    pub regex: Regex,
}

/// Every rule, and one set of all their patterns (index i is rule i).
#[derive(Debug)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub set: RegexSet,
}

/// Parses rules.toml.
pub fn specs(text: &str) -> Result<Vec<RuleSpec>, AttacksError> {
    toml::from_str::<RuleFile>(text)
        .map(|f| f.rule)
        .map_err(|e| AttacksError::Rules(e.to_string()))
}

impl Rules {
    pub fn compile(specs: &[RuleSpec]) -> Result<Self, AttacksError> {
        let mut rules = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut kinds = 0;
            for point in &spec.points {
                kinds |= match point.as_str() {
                    // Every value point; XML bodies only where a rule names them.
                    "values" => Kind::ALL
                        .iter()
                        .filter(|k| !matches!(k, Kind::Xml | Kind::Name | Kind::Segment))
                        .fold(0, |bits, k| bits | k.bit()),
                    other => Kind::ALL
                        .iter()
                        .find(|k| k.name() == other)
                        .map(|k| k.bit())
                        .ok_or_else(|| {
                            AttacksError::Rules(format!(
                                "rule {}: unknown point '{other}'",
                                spec.id
                            ))
                        })?,
                };
            }
            let regex = RegexBuilder::new(&spec.pattern)
                .case_insensitive(true)
                .size_limit(SIZE_LIMIT)
                .build()
                .map_err(|e| AttacksError::Rules(format!("rule {}: {e}", spec.id)))?;
            rules.push(Rule {
                id: spec.id.clone(),
                class: spec.class,
                kinds,
                regex,
            });
        }
        let set = RegexSetBuilder::new(specs.iter().map(|s| &s.pattern))
            .case_insensitive(true)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| AttacksError::Rules(e.to_string()))?;
        Ok(Self { rules, set })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule's own examples, as normalised values: the rule file documents itself and
    /// cannot drift from what the patterns do.
    #[test]
    fn every_rule_matches_its_examples_and_no_other() {
        let specs = specs(RULES_TOML).unwrap();
        let rules = Rules::compile(&specs).unwrap();
        let mut ids = std::collections::HashSet::new();
        let mut wrong = Vec::new();
        for (spec, rule) in specs.iter().zip(&rules.rules) {
            assert!(ids.insert(&spec.id), "duplicate rule id {}", spec.id);
            assert!(!spec.must_match.is_empty(), "{}: no examples", spec.id);
            for example in &spec.must_match {
                if !rule.regex.is_match(example) {
                    wrong.push(format!("{} misses {example:?}", spec.id));
                }
            }
            for example in &spec.must_not_match {
                if rule.regex.is_match(example) {
                    wrong.push(format!("{} matches {example:?}", spec.id));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        // Every class but the ones handled in code (libinjection's sqli, protocol) has a rule.
        for class in AttackClass::ALL {
            if !matches!(class, AttackClass::Sqli | AttackClass::Protocol) {
                assert!(
                    specs.iter().any(|s| s.class == class),
                    "no rule for {class:?}"
                );
            }
        }
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        let bad =
            specs("[[rule]]\nid = \"x\"\nclass = \"rce\"\npoints = [\"query\"]\npattern = \"(\"\n")
                .unwrap();
        let err = Rules::compile(&bad).unwrap_err().to_string();
        assert!(err.contains("rule x"), "{err}");
        let bad = specs(
            "[[rule]]\nid = \"y\"\nclass = \"rce\"\npoints = [\"nowhere\"]\npattern = \"a\"\n",
        )
        .unwrap();
        assert!(
            Rules::compile(&bad)
                .unwrap_err()
                .to_string()
                .contains("nowhere")
        );
        assert!(
            specs("[[rule]]\nid = \"z\"\nclass = \"nope\"\npoints = []\npattern = \"a\"\n")
                .is_err()
        );
    }
}
