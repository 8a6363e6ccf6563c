//! Task graphs: a DAG of tasks with dependencies, validated with petgraph. Pure.
//!
//! Validation reports every problem at once: duplicate ids, dependencies on tasks that are
//! not in the graph (naming both ends), and cycles (naming the path, e.g. `a → b → c → a`).
//! [`TaskGraph::ready`] says which tasks may start given the ones already completed, and
//! [`TaskGraph::descendants`] which ones a failed task takes down with it.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeRef};
use serde::{Deserialize, Serialize};

/// One task in a graph file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GraphTask {
    /// Id, unique in the graph.
    pub id: String,
    /// Capability it needs.
    pub capability: String,
    /// Input.
    #[serde(default)]
    pub input: serde_json::Value,
    /// Ids of the tasks it depends on.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Attempts before the task is dead-lettered (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Lease per attempt in milliseconds (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

/// What a failed task does to its descendants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Descendants are cancelled.
    #[default]
    CancelDescendants,
    /// Descendants fail with the parent's reason.
    FailDescendants,
}

/// A task graph as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphSpec {
    /// The tasks.
    pub tasks: Vec<GraphTask>,
    /// Failure policy.
    #[serde(default)]
    pub on_failure: FailurePolicy,
}

/// A problem in a graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphProblem {
    /// Two tasks share an id.
    #[error("task id {0:?} is used more than once")]
    DuplicateId(String),
    /// A dependency names a task that is not in the graph.
    #[error("task {task:?} depends on {missing:?}, which is not in the graph")]
    MissingDependency {
        /// The dependent task.
        task: String,
        /// The missing dependency.
        missing: String,
    },
    /// A cycle.
    #[error("dependency cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
}

/// All problems found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid task graph: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct GraphError(pub Vec<GraphProblem>);

/// A validated DAG (edges point from a dependency to its dependent).
#[derive(Debug, Clone)]
pub struct TaskGraph {
    graph: DiGraph<String, ()>,
    index: BTreeMap<String, NodeIndex>,
}

impl TaskGraph {
    /// Validates `spec`, reporting every problem at once.
    pub fn new(spec: &GraphSpec) -> Result<Self, GraphError> {
        let mut problems = Vec::new();
        let mut graph = DiGraph::new();
        let mut index = BTreeMap::new();
        for t in &spec.tasks {
            if index.contains_key(&t.id) {
                problems.push(GraphProblem::DuplicateId(t.id.clone()));
                continue;
            }
            index.insert(t.id.clone(), graph.add_node(t.id.clone()));
        }
        for t in &spec.tasks {
            for dep in &t.depends_on {
                match (index.get(dep), index.get(&t.id)) {
                    (Some(&from), Some(&to)) => {
                        graph.update_edge(from, to, ());
                    }
                    _ => problems.push(GraphProblem::MissingDependency {
                        task: t.id.clone(),
                        missing: dep.clone(),
                    }),
                }
            }
        }
        for component in tarjan_scc(&graph) {
            let self_loop = component.len() == 1 && graph.contains_edge(component[0], component[0]);
            if component.len() > 1 || self_loop {
                problems.push(GraphProblem::Cycle(cycle_path(&graph, &component)));
            }
        }
        if problems.is_empty() {
            Ok(Self { graph, index })
        } else {
            Err(GraphError(problems))
        }
    }

    /// Tasks not in `done` whose dependencies are all in `done`, sorted by id.
    pub fn ready(&self, done: &BTreeSet<String>) -> Vec<String> {
        self.index
            .iter()
            .filter(|(id, _)| !done.contains(*id))
            .filter(|&(_, &n)| {
                self.graph
                    .edges_directed(n, petgraph::Direction::Incoming)
                    .all(|e| done.contains(&self.graph[e.source()]))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The ids of the tasks `id` depends on, sorted.
    pub fn parents(&self, id: &str) -> Vec<String> {
        let Some(&n) = self.index.get(id) else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .graph
            .edges_directed(n, petgraph::Direction::Incoming)
            .map(|e| self.graph[e.source()].clone())
            .collect();
        out.sort();
        out
    }

    /// Every task downstream of `id` (not `id` itself), sorted.
    pub fn descendants(&self, id: &str) -> Vec<String> {
        let Some(&start) = self.index.get(id) else {
            return Vec::new();
        };
        let mut dfs = Dfs::new(&self.graph, start);
        let mut out = BTreeSet::new();
        while let Some(n) = dfs.next(&self.graph) {
            if n != start {
                out.insert(self.graph[n].clone());
            }
        }
        out.into_iter().collect()
    }
}

/// A readable cycle through the nodes of one strongly connected component, starting at its
/// smallest id and returning to it.
fn cycle_path(graph: &DiGraph<String, ()>, component: &[NodeIndex]) -> Vec<String> {
    let members: BTreeSet<NodeIndex> = component.iter().copied().collect();
    let Some(&start) = component.iter().min_by_key(|n| graph[**n].clone()) else {
        return Vec::new();
    };
    // Walk successors inside the component, preferring the smallest id, until back at start.
    let mut path = vec![graph[start].clone()];
    let mut seen = BTreeSet::from([start]);
    let mut at = start;
    loop {
        let mut next: Vec<NodeIndex> = graph
            .neighbors(at)
            .filter(|n| members.contains(n))
            .collect();
        next.sort_by_key(|n| graph[*n].clone());
        if next.contains(&start)
            && (path.len() == component.len() || next.iter().all(|n| seen.contains(n)))
        {
            path.push(graph[start].clone());
            return path;
        }
        match next.into_iter().find(|n| !seen.contains(n)) {
            Some(n) => {
                path.push(graph[n].clone());
                seen.insert(n);
                at = n;
            }
            None => {
                path.push(graph[start].clone());
                return path;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(edges: &[(&str, &[&str])]) -> GraphSpec {
        GraphSpec {
            tasks: edges
                .iter()
                .map(|(id, deps)| GraphTask {
                    id: id.to_string(),
                    capability: "x".into(),
                    input: serde_json::Value::Null,
                    depends_on: deps.iter().map(|d| d.to_string()).collect(),
                    ..Default::default()
                })
                .collect(),
            on_failure: FailurePolicy::default(),
        }
    }

    #[test]
    fn releases_children_when_parents_complete() {
        // build-core → build-app → test-app; build-core → test-core
        let g = TaskGraph::new(&spec(&[
            ("build-core", &[]),
            ("build-app", &["build-core"]),
            ("test-core", &["build-core"]),
            ("test-app", &["build-app"]),
        ]))
        .expect("valid");
        let mut done = BTreeSet::new();
        assert_eq!(g.ready(&done), vec!["build-core"]);
        done.insert("build-core".to_string());
        assert_eq!(g.ready(&done), vec!["build-app", "test-core"]);
        done.insert("build-app".to_string());
        assert_eq!(g.ready(&done), vec!["test-app", "test-core"]);
        assert_eq!(g.parents("test-app"), vec!["build-app"]);
        assert_eq!(
            g.descendants("build-core"),
            vec!["build-app", "test-app", "test-core"]
        );
        assert!(g.descendants("test-app").is_empty());
    }

    #[test]
    fn reports_every_problem_with_names() {
        let err = TaskGraph::new(&spec(&[
            ("a", &["c"]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &["ghost"]),
            ("d", &[]),
            ("e", &["e"]),
        ]))
        .expect_err("invalid");
        assert!(err.0.contains(&GraphProblem::DuplicateId("d".into())));
        assert!(err.0.contains(&GraphProblem::MissingDependency {
            task: "d".into(),
            missing: "ghost".into()
        }));
        assert!(
            err.0.contains(&GraphProblem::Cycle(vec![
                "a".into(),
                "b".into(),
                "c".into(),
                "a".into()
            ])),
            "{err}"
        );
        assert!(
            err.0
                .contains(&GraphProblem::Cycle(vec!["e".into(), "e".into()])),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("a → b → c → a"), "{text}");
        assert!(text.contains("\"ghost\""), "{text}");
    }

    #[test]
    fn graph_files_parse_from_json() {
        let text = r#"{"tasks":[{"id":"a","capability":"compiler.rust"},{"id":"b","capability":"executor.test","depends_on":["a"]}],"on_failure":"fail_descendants"}"#;
        let spec: GraphSpec = serde_json::from_str(text).expect("parses");
        assert_eq!(spec.on_failure, FailurePolicy::FailDescendants);
        let g = TaskGraph::new(&spec).expect("valid");
        assert_eq!(g.ready(&BTreeSet::new()), vec!["a"]);
    }
}
