//! Finding a model's files: a local directory, or a Hugging Face hub repo.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(
        "{path} is missing; this model's directory needs {}. README.md says where \
         each model comes from",
        required.join(", ")
    )]
    Missing {
        path: PathBuf,
        required: &'static [&'static str],
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid model config")]
    Config {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("weights in {path} do not fit the model")]
    Weights {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    #[error("model files disagree: {0}")]
    Mismatch(String),
    #[error("cannot fetch {file} from hub repo {repo}")]
    Hub {
        repo: String,
        file: String,
        #[source]
        source: hf_hub::api::sync::ApiError,
    },
}

fn read(path: PathBuf) -> Result<String, ModelError> {
    std::fs::read_to_string(&path).map_err(|source| ModelError::Read { path, source })
}

pub fn read_config<T: DeserializeOwned>(dir: &Path) -> Result<T, ModelError> {
    let path = dir.join("config.json");
    let text = read(path.clone())?;
    serde_json::from_str(&text).map_err(|source| ModelError::Config { path, source })
}

/// Class names, one per line, in class-index order.
pub fn read_labels(dir: &Path) -> Result<Vec<String>, ModelError> {
    let text = read(dir.join("labels.txt"))?;
    Ok(text.lines().map(|l| l.trim().to_owned()).collect())
}

/// Checks that `dir` holds every file in `required`.
pub fn local(dir: &Path, required: &'static [&'static str]) -> Result<PathBuf, ModelError> {
    for file in required {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(ModelError::Missing { path, required });
        }
    }
    Ok(dir.to_owned())
}

/// Downloads (or finds in the hub cache) the `required` files of a model
/// repo at `revision` (a branch, tag, commit or `refs/pr/N`).
pub fn from_hub(
    repo: &str,
    revision: &str,
    required: &'static [&'static str],
) -> Result<PathBuf, ModelError> {
    let hub = |file: &str, source| ModelError::Hub {
        repo: repo.to_owned(),
        file: file.to_owned(),
        source,
    };
    let api = hf_hub::api::sync::Api::new().map_err(|e| hub("(api)", e))?;
    let repo_api = api.repo(hf_hub::Repo::with_revision(
        repo.to_owned(),
        hf_hub::RepoType::Model,
        revision.to_owned(),
    ));
    let mut dir = None;
    for file in required {
        let path = repo_api.get(file).map_err(|e| hub(file, e))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    local(&dir.unwrap_or_default(), required)
}
