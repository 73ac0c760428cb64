//! The Dockerfile frontend: parse a Dockerfile into [`Stages`] of typed
//! [`Build`](super::Build) recipes.
//!
//! The parser ([`syntax`]) follows BuildKit's (its test data are this crate's conformance
//! suite): parser directives (`# syntax`, `# escape`, `# check`), continuations with either
//! escape character, comments inside continued lines, heredocs. The frontend then gives each
//! instruction the meaning Docker's reference documents, BuildKit's where the two differ:
//! stages (`FROM x AS name`, `COPY --from`, `FROM <stage>`, a target, unneeded stages
//! skipped), `ARG` scoping (an `ARG` before the first `FROM` only in `FROM` lines, a bare
//! `ARG NAME` in a stage brings its global value in), variables (`$A`, `${A:-x}`, `${A:+x}`
//! and the others of [`ShellError`]'s list) where the reference expands them, and every
//! instruction. What is not supported fails naming the feature, the file, line and column.
//! See `docs/dockerfile.md` for the list, case by case.
//!
//! ```no_run
//! use molde_container::build::dockerfile::Dockerfile;
//! # fn f(store: &molde_image::Store) -> Result<(), Box<dyn std::error::Error>> {
//! let text = "FROM base:1 AS build\nRUN echo hi > /out\nFROM base:1\nCOPY --from=build /out /\n";
//! let df = Dockerfile::parse(text, std::path::Path::new("."), &[("NAME", "you")])?;
//! let report = df.into_build(store)?.build(store, "greeter:1")?;
//! # let _ = report; Ok(()) }
//! ```

mod convert;
mod dump;
mod flags;
mod instr;
mod resolve;
mod run;
mod shell;
pub mod syntax;
mod words;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use molde_image::{Image, Store};

pub use resolve::{ImageLookupError, ImageResolver, StoreResolver};
pub use shell::ShellError;

use super::Stages;
use super::ignore::Ignore;

/// A Dockerfile error: where (file, line, column from 1), in which instruction, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DockerfileError {
    /// The file's name (`Dockerfile` unless told).
    pub file: String,
    /// The line (the instruction's first line).
    pub line: usize,
    /// The column of the instruction's keyword.
    pub column: usize,
    /// The instruction's keyword (empty when the error is not in one).
    pub instruction: String,
    /// What is wrong.
    pub message: String,
    /// The image a `FROM` or `COPY --from` names, when it is what could not be had.
    #[source]
    pub image: Option<Box<ImageLookupError>>,
}

impl fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.instruction.is_empty() {
            write!(f, "{}: ", self.instruction)?;
        }
        f.write_str(&self.message)
    }
}

/// A parsed Dockerfile with its build context and build arguments.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    file: String,
    parsed: syntax::Parsed,
    context: PathBuf,
    build_args: Vec<(String, String)>,
    target: Option<String>,
    ignore: Arc<Ignore>,
}

impl Dockerfile {
    /// Parse `text`. Sources of `COPY`/`ADD` are relative to `context`, filtered by its
    /// `.dockerignore`; `build_args` override `ARG` defaults.
    pub fn parse(
        text: &str,
        context: &Path,
        build_args: &[(&str, &str)],
    ) -> Result<Dockerfile, DockerfileError> {
        Dockerfile::parse_named(text, "Dockerfile", context, build_args)
    }

    /// Read the Dockerfile at `path` and parse it: as [`Dockerfile::parse`], and a
    /// `<name>.dockerignore` beside it, if there is one, is used instead of the context's
    /// `.dockerignore`.
    pub fn load(
        path: &Path,
        context: &Path,
        build_args: &[(&str, &str)],
    ) -> Result<Dockerfile, DockerfileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DockerfileError {
            file: name.clone(),
            line: 0,
            column: 0,
            instruction: String::new(),
            message: format!("reading it: {e}"),
            image: None,
        })?;
        let mut df = Dockerfile::parse_named(&text, &name, context, build_args)?;
        let own = PathBuf::from(format!("{}.dockerignore", path.display()));
        if let Ok(t) = std::fs::read_to_string(&own) {
            df.ignore = Arc::new(Ignore::parse(&t));
        }
        Ok(df)
    }

    fn parse_named(
        text: &str,
        file: &str,
        context: &Path,
        build_args: &[(&str, &str)],
    ) -> Result<Dockerfile, DockerfileError> {
        let parsed = syntax::parse(text).map_err(|e| DockerfileError {
            file: file.to_owned(),
            line: e.line,
            column: 1,
            instruction: e
                .instruction
                .as_deref()
                .and_then(|i| i.split_whitespace().next())
                .unwrap_or_default()
                .to_ascii_uppercase(),
            message: e.message,
            image: None,
        })?;
        let ignore = std::fs::read_to_string(context.join(".dockerignore"))
            .map(|t| Ignore::parse(&t))
            .unwrap_or_default();
        let df = Dockerfile {
            file: file.to_owned(),
            parsed,
            context: context.to_owned(),
            build_args: build_args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            target: None,
            ignore: Arc::new(ignore),
        };
        convert::check(&df)?;
        Ok(df)
    }

    /// Build the stage `name` (or index) instead of the last one.
    pub fn target(mut self, name: impl Into<String>) -> Dockerfile {
        self.target = Some(name.into());
        self
    }

    /// The parse: directives and instructions with their lines.
    pub fn syntax(&self) -> &syntax::Parsed {
        &self.parsed
    }

    /// The stages, `FROM` images resolved in `store`.
    pub fn into_build(self, store: &Store) -> Result<Stages, DockerfileError> {
        self.into_build_with(store, &StoreResolver)
    }

    /// The stages, `FROM` and `COPY --from` images resolved by `resolver` (which may pull).
    pub fn into_build_with(
        self,
        store: &Store,
        resolver: &dyn ImageResolver,
    ) -> Result<Stages, DockerfileError> {
        convert::convert(&self, &mut |name: &str| resolver.resolve(store, name))
    }

    /// The stages, with images found by `find` (tests and callers without a store).
    pub fn into_stages(
        self,
        find: &mut dyn FnMut(&str) -> Result<Image, ImageLookupError>,
    ) -> Result<Stages, DockerfileError> {
        convert::convert(&self, find)
    }

    fn error(&self, node: Option<&syntax::Node>, message: impl Into<String>) -> DockerfileError {
        DockerfileError {
            file: self.file.clone(),
            line: node.map_or(1, |n| n.start_line),
            column: node.map_or(1, |n| n.column),
            instruction: node.map(syntax::Node::command).unwrap_or_default(),
            message: message.into(),
            image: None,
        }
    }
}

#[cfg(test)]
mod tests;
