/// What the producer must know of a task without loading its model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub name: &'static str,
    pub width: u32,
    pub height: u32,
}

const TASKS: &[TaskSpec] = &[
    TaskSpec {
        name: "embed.effnet-lite0",
        width: 224,
        height: 224,
    },
    // BLIP base and large both read 384×384 (BlipImageProcessor's size).
    TaskSpec {
        name: "caption.blip-base",
        width: 384,
        height: 384,
    },
    TaskSpec {
        name: "caption.blip-large",
        width: 384,
        height: 384,
    },
    // No model (the worker's null backend): zero embeddings at once, to
    // measure the pipeline without compute. Benchmarks and tests only.
    TaskSpec {
        name: "embed.null",
        width: 224,
        height: 224,
    },
    TaskSpec {
        name: "embed.null-384",
        width: 384,
        height: 384,
    },
];

/// The spec of a task the fleet knows, by routing key.
pub fn known_task(name: &str) -> Option<TaskSpec> {
    TASKS.iter().copied().find(|t| t.name == name)
}
