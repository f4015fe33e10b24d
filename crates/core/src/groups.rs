//! Directory groups and their nesting.

use std::collections::{BTreeSet, HashMap};

/// The id of a directory (user) group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub String);

impl GroupId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which groups contain which: a member of a nested group is a member of every
/// group that contains it, directly or through other groups.
#[derive(Debug, Clone, Default)]
pub struct GroupGraph {
    containers_of: HashMap<GroupId, Vec<GroupId>>,
}

impl GroupGraph {
    /// An empty graph (no nesting).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `container` has `member` as one of its members.
    pub fn add_nesting(&mut self, container: GroupId, member: GroupId) {
        self.containers_of
            .entry(member)
            .or_default()
            .push(container);
    }

    /// Every group a user with these direct memberships belongs to, nested ones
    /// included. Cycles in the directory are tolerated: each group is visited once.
    pub fn effective_groups<'a>(
        &self,
        direct: impl IntoIterator<Item = &'a GroupId>,
    ) -> BTreeSet<GroupId> {
        let mut seen: BTreeSet<GroupId> = BTreeSet::new();
        let mut queue: Vec<&GroupId> = direct.into_iter().collect();
        while let Some(group) = queue.pop() {
            if !seen.insert(group.clone()) {
                continue;
            }
            if let Some(containers) = self.containers_of.get(group) {
                queue.extend(containers.iter().filter(|c| !seen.contains(*c)));
            }
        }
        seen
    }

    /// Whether making `member` a member of `container` would create a cycle.
    pub fn would_cycle(&self, container: &GroupId, member: &GroupId) -> bool {
        container == member || self.effective_groups([container]).contains(member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(id: &str) -> GroupId {
        GroupId(id.to_owned())
    }

    fn graph(edges: &[(&str, &str)]) -> GroupGraph {
        let mut graph = GroupGraph::new();
        for (container, member) in edges {
            graph.add_nesting(g(container), g(member));
        }
        graph
    }

    fn check(edges: &[(&str, &str)], direct: &[&str], expected: &[&str]) {
        let direct: Vec<GroupId> = direct.iter().map(|d| g(d)).collect();
        let got = graph(edges).effective_groups(&direct);
        let want: BTreeSet<GroupId> = expected.iter().map(|e| g(e)).collect();
        assert_eq!(got, want, "edges {edges:?}, direct {direct:?}");
    }

    #[test]
    fn closure_follows_nesting_and_survives_cycles() {
        check(&[], &[], &[]);
        check(&[], &["a"], &["a"]);
        check(&[("eng", "platform")], &["platform"], &["platform", "eng"]);
        check(&[("eng", "platform")], &["eng"], &["eng"]);
        check(
            &[("all", "eng"), ("eng", "platform"), ("eng", "sre")],
            &["sre"],
            &["sre", "eng", "all"],
        );
        check(&[("a", "b"), ("b", "a")], &["a"], &["a", "b"]);
        check(&[("a", "a")], &["a"], &["a"]);
        check(
            &[("a", "b"), ("b", "c"), ("c", "a")],
            &["b"],
            &["a", "b", "c"],
        );
        check(
            &[("x", "a"), ("y", "a"), ("z", "x"), ("z", "y")],
            &["a"],
            &["a", "x", "y", "z"],
        );
    }

    #[test]
    fn detects_cycles_before_they_are_made() {
        let graph = graph(&[("eng", "platform"), ("platform", "sre")]);
        assert!(graph.would_cycle(&g("sre"), &g("eng")));
        assert!(graph.would_cycle(&g("eng"), &g("eng")));
        assert!(!graph.would_cycle(&g("eng"), &g("sre")));
        assert!(!graph.would_cycle(&g("finance"), &g("eng")));
    }
}
