//! `murmur subjects`: the declared subject tree, or with `--roles` the role matrix.

use anyhow::Result;
use murmur_subjects::Catalog;

use crate::settings::Settings;

/// Prints the subject tree or the role matrix.
pub fn run(settings: &Settings, roles: bool) -> Result<()> {
    let catalog = Catalog::standard();
    if roles {
        let realm = if settings.realm_explicit {
            settings.realm.to_string()
        } else {
            "{realm}".to_string()
        };
        let names = murmur_subjects::roles::ResourceNames::for_streams(
            &settings.log.history_stream,
            &settings.log.dlq_stream,
        );
        let matrix = murmur_subjects::roles::RoleMatrix::derive(&realm, &names);
        if settings.json {
            out!("{}", serde_json::to_string_pretty(&matrix)?);
        } else {
            out!("{}", matrix.text().trim_end());
        }
        return Ok(());
    }
    if settings.json {
        out!("{}", serde_json::to_string_pretty(&catalog.views())?);
    } else {
        out!("{}", catalog.tree_text().trim_end());
    }
    Ok(())
}
