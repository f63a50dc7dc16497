//! `file-marker`: a resource whose whole state is a marker file holding the
//! resource's name. Online writes it, offline removes it, the probes read it.
//! The file lives in a directory the resource's grant preopens, so this type
//! also shows the `filesystem` capability at its simplest.

use std::io::ErrorKind;
use std::path::PathBuf;

use serde::Deserialize;
use steward_sdk::{CallContext, Capability, CheckLevel, Error, Health, Instance, Problem};
use steward_sdk::{PropertyKind, ResourceType, TypeInfo, export_plugin};

#[derive(Deserialize)]
struct Properties {
    path: String,
}

struct FileMarker {
    name: String,
    path: PathBuf,
}

impl ResourceType for FileMarker {
    type Properties = Properties;
    type Instance = FileMarker;

    fn metadata() -> TypeInfo {
        TypeInfo::new("file-marker", env!("CARGO_PKG_VERSION"), "Keeps its state as a marker file.")
            .required("path", PropertyKind::Text, "The marker file's path inside a granted directory.")
            .needs(Capability::Filesystem)
            .build()
    }

    fn validate(properties: &Properties) -> Result<(), Vec<Problem>> {
        // Preopened directories are named by absolute guest paths.
        if properties.path.starts_with('/') && !properties.path.ends_with('/') {
            return Ok(());
        }
        let message = format!("`{}` is not an absolute file path such as /state/web.online", properties.path);
        Err(vec![Problem::new("path", message)])
    }

    fn open(name: &str, properties: Properties) -> Result<FileMarker, Error> {
        Ok(FileMarker { name: name.to_string(), path: PathBuf::from(properties.path) })
    }
}

impl Instance for FileMarker {
    fn online(&mut self, _context: &CallContext) -> Result<(), Error> {
        std::fs::write(&self.path, &self.name).map_err(|error| {
            let path = self.path.display();
            Error::Fatal(format!("cannot write {path}: {error}; is its directory granted to the resource?"))
        })
    }

    fn offline(&mut self, _context: &CallContext) -> Result<(), Error> {
        match std::fs::remove_file(&self.path) {
            Err(error) if error.kind() != ErrorKind::NotFound => {
                Err(Error::Fatal(format!("cannot remove {}: {error}", self.path.display())))
            }
            _ => Ok(()),
        }
    }

    fn terminate(&mut self) {
        // Best effort by contract; a failure shows in the next probe.
        let _ = std::fs::remove_file(&self.path);
    }

    fn looks_alive(&mut self) -> bool {
        self.path.exists()
    }

    fn is_alive(&mut self, _level: CheckLevel) -> Health {
        let path = self.path.display();
        match std::fs::read_to_string(&self.path) {
            Ok(content) if content == self.name => Health::alive(format!("{path} holds `{content}`")),
            Ok(content) => Health::dead(format!("{path} holds `{content}`, expected `{}`", self.name)),
            Err(error) if error.kind() == ErrorKind::NotFound => Health::dead(format!("{path} is missing")),
            Err(error) => Health::dead(format!("{path} is unreadable: {error}")),
        }
    }
}

export_plugin!(FileMarker);
