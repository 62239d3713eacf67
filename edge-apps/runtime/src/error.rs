use std::path::Path;

/// Errors of the edge-app runtime (deploy refusals, storage, engine).
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("apps database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("bundle refused: {0}")]
    Artifact(#[from] gatewayd_artifact::ArtifactError),
    #[error("wasm engine: {0}")]
    Engine(String),
    #[error("the module does not compile: {0}")]
    Compile(String),
    #[error("app {app}: the component does not match the gatewayd:edge@0.1.0 world: {reason}")]
    Link { app: String, reason: String },
    #[error("app {app}: model {model}: {reason}")]
    Model {
        app: String,
        model: String,
        reason: String,
    },
    #[error("{0} apps are deployed already (edge_apps.max_apps)")]
    TooManyApps(usize),
    #[error("no app named {0:?} is deployed")]
    NotDeployed(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the edge-app runtime has stopped")]
    Stopped,
}

impl EdgeError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        EdgeError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
