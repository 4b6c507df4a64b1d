//! The rules of making a backup AMI of an instance, shared by `ami create` and AMI policies:
//! whether encryption needs an encrypted CopyImage, and the names of the AMIs made on the way.
//! The AWS calls that follow these rules are autosnap-aws's `ami_flow::create_backup_image`.

/// Whether asking for encryption means an encrypted CopyImage after CreateImage: some volume
/// of the instance is unencrypted, or its volumes cannot be seen (then encryption cannot be
/// assumed). Without `encrypt`, never.
pub fn needs_encrypted_copy(encrypt: bool, volumes_encrypted: &[bool]) -> bool {
    encrypt && (volumes_encrypted.is_empty() || volumes_encrypted.iter().any(|e| !e))
}

/// Where the names of a backup AMI come from: the name asked for goes to the AMI the user
/// keeps; an AMI made only to be copied encrypted (and removed) is named near it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupImageNames {
    /// The name of the AMI that stays (the encrypted copy, when one is made).
    pub name: String,
    /// With an encrypted copy planned: the name of the first, unencrypted AMI.
    pub intermediate: Option<String>,
}

impl BackupImageNames {
    /// The name CreateImage gets.
    pub fn first(&self) -> &str {
        self.intermediate.as_deref().unwrap_or(&self.name)
    }
}

/// The name to look for a free name near, for the first AMI when it is an intermediate.
pub fn intermediate_base(name: &str) -> String {
    format!("{name}-unencrypted")
}

/// The name to look for a free name near, for an encrypted copy that was not planned (the
/// volumes looked encrypted, yet a snapshot of the AMI is not): the first AMI holds `name`.
pub fn unplanned_copy_base(name: &str) -> String {
    format!("{name}-encrypted")
}

/// The name of the encrypted copy: the planned name, or one near it when the first AMI
/// already holds it (`free` finds a free name near a base).
pub fn encrypted_copy_name(names: &BackupImageNames) -> Result<String, String> {
    match names.intermediate {
        Some(_) => Ok(names.name.clone()),
        None => Err(unplanned_copy_base(&names.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_copy_is_needed_only_for_unencrypted_or_unseen_volumes() {
        // (encrypt, volumes' encryption, copy needed)
        let cases: &[(bool, &[bool], bool)] = &[
            (false, &[false], false),
            (false, &[], false),
            (true, &[true, true], false),
            (true, &[true, false], true),
            (true, &[false], true),
            (true, &[], true),
        ];
        for (encrypt, volumes, want) in cases {
            assert_eq!(
                needs_encrypted_copy(*encrypt, volumes),
                *want,
                "encrypt {encrypt}, volumes {volumes:?}"
            );
        }
    }

    #[test]
    fn the_kept_ami_gets_the_name_asked_for() {
        let planned = BackupImageNames {
            name: "web".into(),
            intermediate: Some("web-unencrypted".into()),
        };
        assert_eq!(planned.first(), "web-unencrypted");
        assert_eq!(encrypted_copy_name(&planned), Ok("web".to_string()));

        let plain = BackupImageNames {
            name: "web".into(),
            intermediate: None,
        };
        assert_eq!(plain.first(), "web");
        // The first AMI holds the name: the copy goes near `web-encrypted`.
        assert_eq!(
            encrypted_copy_name(&plain),
            Err("web-encrypted".to_string())
        );
        assert_eq!(intermediate_base("web"), "web-unencrypted");
    }
}
