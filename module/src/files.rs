//! Which files a list of module paths names, and reading them as one module.
//!
//! An app is often several module files — one per team or service, remote functions in one,
//! I/O in another — given one by one or as a directory. Reading is I/O at the edge; which
//! entries of a directory count ([`is_module_file_name`]) and their order are pure.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics, Severity};
use crate::model::Module;

/// The module files `paths` name, in order: a file stands for itself; a directory for every
/// `*.yaml` and `*.yml` file directly in it, in name order (byte-wise, as `ls` in the C
/// locale sorts). Subdirectories are not entered, and hidden files (names starting with `.`)
/// are left out as a shell's `*.yaml` leaves them out, so editor backups and Kubernetes'
/// ConfigMap internals (`..data/`) are never read; other files (an input `names.txt` beside
/// the module) are ignored.
///
/// A path that does not exist is kept, for [`crate::load_files`] to report that it cannot be
/// read. Errors, all reported together: a directory that cannot be listed or holds no module
/// file, a file named twice (also through a directory), and no path at all.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("statefun-doc-module-files-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// for name in ["b.yml", "a.yaml", "notes.txt", ".hidden.yaml"] {
///     std::fs::write(dir.join(name), "").unwrap();
/// }
/// let files = statefun_module::module_files(&[&dir]).unwrap();
/// assert_eq!(files, [dir.join("a.yaml"), dir.join("b.yml")]);
///
/// let empty = dir.join("empty");
/// std::fs::create_dir_all(&empty).unwrap();
/// let err = statefun_module::module_files(&[&empty]).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     format!("{}: the directory holds no module file (`*.yaml` or `*.yml` directly in it)", empty.display())
/// );
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn module_files<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<PathBuf>, Diagnostics> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    if paths.is_empty() {
        errors.push(error(
            "(no module file)",
            "no module file or directory was given".to_string(),
        ));
    }
    for path in paths {
        let path = path.as_ref();
        if !path.is_dir() {
            files.push(path.to_path_buf());
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push(error(
                    &path.display().to_string(),
                    format!("cannot list the directory: {e}"),
                ));
                continue;
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                // `is_file` follows symbolic links: a link to a module file counts.
                Ok(entry) if entry.path().is_file() => names.push(entry.file_name()),
                Ok(_) => {}
                Err(e) => errors.push(error(
                    &path.display().to_string(),
                    format!("cannot list the directory: {e}"),
                )),
            }
        }
        let names = module_file_names(names);
        if names.is_empty() {
            errors.push(error(
                &path.display().to_string(),
                "the directory holds no module file (`*.yaml` or `*.yml` directly in it)"
                    .to_string(),
            ));
        }
        files.extend(names.into_iter().map(|name| path.join(name)));
    }
    // The same file twice would declare every id twice; say so plainly instead.
    let mut seen: HashMap<PathBuf, &Path> = HashMap::new();
    for file in &files {
        let key = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        match seen.get(&key) {
            Some(first) => errors.push(error(
                &file.display().to_string(),
                format!(
                    "the module file is given twice (also as {}); each file is read once",
                    first.display()
                ),
            )),
            None => {
                seen.insert(key, file);
            }
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(Diagnostics(errors))
    }
}

/// Whether a directory entry of this name is a module file: `*.yaml` or `*.yml`, not hidden.
pub fn is_module_file_name(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    !name.starts_with('.')
        && [".yaml", ".yml"]
            .iter()
            .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

/// The module files among a directory's file names, in name order.
fn module_file_names(mut names: Vec<OsString>) -> Vec<OsString> {
    names.retain(|name| is_module_file_name(name));
    names.sort();
    names
}

/// Reads, parses and validates the module files and directories `paths` as one module
/// (directories expanded by [`module_files`]).
///
/// The module is the union of the documents of every file, read in order, as if they were
/// one file: ingress and egress ids, Kafka cluster ids and endpoint function patterns must
/// be unique across all of them (a collision names both files and lines), and a reference
/// may cross files (a dead-letter egress or a Kafka cluster declared in another file).
/// Relative paths resolve against the directory of the file that declares them: each
/// ingress and egress records its file ([`crate::Ingress::file`], [`crate::Egress::file`]).
/// Every file is read before anything is checked; if one cannot be read, the errors are
/// those of reading.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("statefun-doc-load-files-{}", std::process::id()));
/// std::fs::create_dir_all(dir.join("io")).unwrap();
/// std::fs::write(
///     dir.join("functions.yaml"),
///     "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: example/*\n  urlPathTemplate: http://functions:8000/{function.name}\n",
/// ).unwrap();
/// std::fs::write(
///     dir.join("io/names.yaml"),
///     "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: example/names\n  path: names.txt\n  valueType: io.statefun.types/string\n  targets: [example/greeter]\n",
/// ).unwrap();
/// let module = statefun_module::load_files(&[dir.join("functions.yaml"), dir.join("io")]).unwrap();
/// assert_eq!(module.files.len(), 2);
/// assert_eq!(module.ingresses[0].file, dir.join("io").join("names.yaml").display().to_string());
/// let greeter = statefun_sdk::TypeName::parse("example/greeter").unwrap();
/// assert!(module.endpoint_for(&greeter).is_some());
///
/// // The same ingress id in a second file: both files are named.
/// std::fs::write(dir.join("io/more.yaml"), std::fs::read(dir.join("io/names.yaml")).unwrap()).unwrap();
/// let err = statefun_module::load_files(&[dir.join("io")]).unwrap_err();
/// let (more, names) = (dir.join("io").join("more.yaml"), dir.join("io").join("names.yaml"));
/// assert_eq!(
///     err.to_string(),
///     format!(
///         "{}:3:7: document 1, spec.id: duplicate ingress id `example/names` (first declared at {}:3, document 1)",
///         names.display(),
///         more.display()
///     )
/// );
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn load_files<P: AsRef<Path>>(paths: &[P]) -> Result<Module, Diagnostics> {
    let files = module_files(paths)?;
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    for file in &files {
        let name = file.display().to_string();
        match read_text(file, &name) {
            Ok(text) => texts.push((name, text)),
            Err(e) => errors.extend(e.0),
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    let sources: Vec<(&str, &str)> = texts
        .iter()
        .map(|(name, text)| (name.as_str(), text.as_str()))
        .collect();
    load_sources(&sources)
}

/// Parses and validates several module texts as one module, as [`load_files`] does with
/// the files' contents: `sources` are (file name, text) pairs, in order; the names are
/// used in diagnostics and recorded in [`Module::files`] and each item's `file`.
///
/// ```
/// let a = "kind: io.statefun-rs.file.v1/egress\nspec:\n  id: shop/out\n  path: out.jsonl\n";
/// let b = "kind: io.statefun-rs.file.v1/egress\nspec:\n  id: shop/out\n  path: other.jsonl\n";
/// let err = statefun_module::load_sources(&[("a.yaml", a), ("b.yaml", b)]).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "b.yaml:3:7: document 1, spec.id: duplicate egress id `shop/out` (first declared at a.yaml:3, document 1)"
/// );
/// ```
pub fn load_sources(sources: &[(&str, &str)]) -> Result<Module, Diagnostics> {
    let stripped: Vec<(&str, &str)> = sources
        .iter()
        .map(|&(name, text)| (name, strip_bom(text)))
        .collect();
    crate::load::load_all(&stripped)
}

/// Editors on Windows like to start files with a byte-order mark.
pub(crate) fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// The text of the module file at `path` (named `name` in errors).
pub(crate) fn read_text(path: &Path, name: &str) -> Result<String, Diagnostics> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| {
            Diagnostics(vec![error(
                name,
                format!(
                    "the file is not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )])
        }),
        Err(e) => Err(Diagnostics(vec![error(
            name,
            format!("cannot read the file: {e}"),
        )])),
    }
}

/// An error about a whole file or directory.
fn error(file: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        document: 0,
        line: None,
        column: None,
        field: String::new(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_file_names_are_yaml_and_yml_not_hidden_in_name_order() {
        let names = [
            "z.yml", "b.yaml", "a.yaml", "in.txt", ".a.yaml", "yaml", ".yml", "A.yaml", "c.yaml~",
            "d.YAML",
        ]
        .map(OsString::from)
        .to_vec();
        assert_eq!(
            module_file_names(names),
            ["A.yaml", "a.yaml", "b.yaml", "z.yml"].map(OsString::from)
        );
    }
}
