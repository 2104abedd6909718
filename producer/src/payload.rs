//! Which payload each task's frame jobs travel in (`--payload`).

use schema::Payload;

/// A default for every task, and exceptions by task name.
#[derive(Clone, Debug, PartialEq)]
pub struct PayloadChoice {
    default: Payload,
    tasks: Vec<(String, Payload)>,
}

impl PayloadChoice {
    /// Parses `ENCODING[,TASK=ENCODING…]`, e.g. `zstd` or
    /// `raw,caption.blip-large=zstd`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoding = |name: &str| match name {
            "raw" => Ok(Payload::Raw),
            "zstd" => Ok(Payload::Zstd),
            other => Err(format!("payload {other:?} is not raw or zstd")),
        };
        let mut parts = text.split(',').map(str::trim);
        let default = encoding(parts.next().unwrap_or_default())?;
        let tasks = parts
            .map(|part| match part.split_once('=') {
                Some((task, name)) => {
                    schema::known_task(task)
                        .ok_or_else(|| format!("payload for unknown task {task:?}"))?;
                    Ok((task.to_owned(), encoding(name)?))
                }
                None => Err(format!(
                    "payload {part:?} after the default is not TASK=ENCODING"
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { default, tasks })
    }

    pub fn for_task(&self, task: &str) -> Payload {
        self.tasks
            .iter()
            .rev()
            .find(|(name, _)| name == task)
            .map_or(self.default, |&(_, payload)| payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_and_exceptions_by_task() -> Result<(), String> {
        let all = PayloadChoice::parse("zstd")?;
        assert_eq!(all.for_task("embed.effnet-lite0"), Payload::Zstd);
        let some = PayloadChoice::parse("raw, caption.blip-large=zstd")?;
        assert_eq!(some.for_task("caption.blip-large"), Payload::Zstd);
        assert_eq!(some.for_task("embed.effnet-lite0"), Payload::Raw);
        for bad in [
            "",
            "jpeg",
            "raw,zstd",
            "raw,caption.nope=zstd",
            "raw,caption.blip-large=lz4",
        ] {
            assert!(PayloadChoice::parse(bad).is_err(), "{bad} must be refused");
        }
        Ok(())
    }
}
