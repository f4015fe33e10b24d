//! Directory groups and their nesting.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

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
    members_of: HashMap<GroupId, Vec<GroupId>>,
}

impl GroupGraph {
    /// An empty graph (no nesting).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `container` has `member` as one of its members.
    pub fn add_nesting(&mut self, container: GroupId, member: GroupId) {
        self.members_of
            .entry(container.clone())
            .or_default()
            .push(member.clone());
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

    /// Every group a user with these direct memberships belongs to, each with
    /// a shortest path that makes it so: from a direct group up to the group
    /// itself (a direct group's path is itself). The same closure as
    /// [`GroupGraph::effective_groups`], walked breadth first to keep the paths.
    pub fn effective_paths<'a>(
        &self,
        direct: impl IntoIterator<Item = &'a GroupId>,
    ) -> BTreeMap<GroupId, Vec<GroupId>> {
        walk(&self.containers_of, direct)
    }

    /// Every group nested inside `root`, directly or through other groups,
    /// `root` included, each with a shortest path from `root` down to it.
    /// Cycles are tolerated: each group is visited once.
    pub fn nested_inside(&self, root: &GroupId) -> BTreeMap<GroupId, Vec<GroupId>> {
        walk(&self.members_of, [root])
    }

    /// Whether making `member` a member of `container` would create a cycle.
    pub fn would_cycle(&self, container: &GroupId, member: &GroupId) -> bool {
        container == member || self.effective_groups([container]).contains(member)
    }
}

/// Breadth-first walk over `edges` from `start`, keeping for each group
/// reached the first (so shortest) path from a start to it.
fn walk<'a>(
    edges: &HashMap<GroupId, Vec<GroupId>>,
    start: impl IntoIterator<Item = &'a GroupId>,
) -> BTreeMap<GroupId, Vec<GroupId>> {
    let mut paths: BTreeMap<GroupId, Vec<GroupId>> = BTreeMap::new();
    let mut queue: VecDeque<GroupId> = VecDeque::new();
    for group in start {
        if !paths.contains_key(group) {
            paths.insert(group.clone(), vec![group.clone()]);
            queue.push_back(group.clone());
        }
    }
    while let Some(group) = queue.pop_front() {
        let Some(next) = edges.get(&group) else {
            continue;
        };
        for reached in next {
            if paths.contains_key(reached) {
                continue;
            }
            let mut path = paths.get(&group).cloned().unwrap_or_default();
            path.push(reached.clone());
            paths.insert(reached.clone(), path);
            queue.push_back(reached.clone());
        }
    }
    paths
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

    fn names(path: &[GroupId]) -> Vec<&str> {
        path.iter().map(GroupId::as_str).collect()
    }

    #[test]
    fn paths_are_shortest_and_agree_with_the_closure() {
        let edges = [
            ("all", "europe"),
            ("europe", "finance-eu"),
            ("finance", "finance-eu"),
            ("all", "finance"),
            ("a", "b"),
            ("b", "a"),
        ];
        let graph = graph(&edges);
        let direct = [g("finance-eu")];
        let paths = graph.effective_paths(&direct);
        let closure = graph.effective_groups(&direct);
        assert_eq!(paths.keys().cloned().collect::<BTreeSet<_>>(), closure);
        assert_eq!(names(&paths[&g("finance-eu")]), ["finance-eu"]);
        assert_eq!(names(&paths[&g("finance")]), ["finance-eu", "finance"]);
        assert_eq!(paths[&g("all")].len(), 3, "{:?}", paths[&g("all")]);

        let inside = graph.nested_inside(&g("all"));
        assert_eq!(names(&inside[&g("all")]), ["all"]);
        assert_eq!(names(&inside[&g("finance-eu")]).len(), 3);
        assert_eq!(inside.len(), 4);
        let cycle = graph.nested_inside(&g("a"));
        assert_eq!(names(&cycle[&g("b")]), ["a", "b"]);
        assert_eq!(cycle.len(), 2);
        assert_eq!(graph.nested_inside(&g("alone")).len(), 1);
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
