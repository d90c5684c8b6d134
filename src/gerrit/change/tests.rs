use super::*;

#[test]
fn the_documented_change_forms_parse() {
    assert_eq!(ChangeId::parse("1234"), Ok(ChangeId::Number(1234)));
    assert_eq!(
        ChangeId::parse("infra/deploy~1234"),
        Ok(ChangeId::ProjectNumber {
            project: "infra/deploy".into(),
            number: 1234
        })
    );
    let triplet =
        ChangeId::parse("infra/deploy~refs/heads/main~I8473b95934b5732ac55d26311a706c9c2bde9940")
            .unwrap();
    assert_eq!(
        triplet,
        ChangeId::Triplet {
            project: "infra/deploy".into(),
            branch: "main".into(),
            change_id: "I8473b95934b5732ac55d26311a706c9c2bde9940".into()
        }
    );
    assert_eq!(
        triplet.segment(),
        "infra/deploy~main~I8473b95934b5732ac55d26311a706c9c2bde9940"
    );
}

#[test]
fn anything_that_could_steer_the_gerrit_url_is_refused() {
    for bad in [
        "",
        "0",
        "012",
        "-1",
        "+12",
        "12345678901",
        "12 ",
        "1234/revisions",
        "../accounts/self~1",
        "infra/../secret~1",
        "infra//x~1",
        "/infra~1",
        "infra%2Fx~1",
        "infra?x=1~1",
        "a~b~c~d",
        "infra~main~I8473b95934b5732ac55d26311a706c9c2bde994",
        "infra~main~I8473B95934B5732AC55D26311A706C9C2BDE9940",
        "infra~main~1234",
        "infra~1234\r\nx",
    ] {
        assert!(ChangeId::parse(bad).is_err(), "{bad:?}");
    }
}

/// `GET /changes/{id}?o=CURRENT_REVISION&o=SUBMIT_REQUIREMENTS&o=DETAILED_LABELS&
/// o=DETAILED_ACCOUNTS` as Gerrit's REST documentation shows it (trimmed).
const DOCUMENTED: &str = r#")]}'
{
  "id": "myProject~master~I8473b95934b5732ac55d26311a706c9c2bde9940",
  "project": "myProject",
  "branch": "master",
  "change_id": "I8473b95934b5732ac55d26311a706c9c2bde9940",
  "subject": "Implementing Feature X",
  "status": "NEW",
  "_number": 3965,
  "owner": {"_account_id": 1000096, "name": "John Doe", "email": "john.doe@example.com", "username": "jdoe"},
  "current_revision": "184ebe53805e102605d11f6b143486d15c23a09c",
  "labels": {
    "Verified": {
      "all": [
        {"value": 0, "_account_id": 1000096, "name": "John Doe", "email": "john.doe@example.com", "username": "jdoe"},
        {"value": 1, "_account_id": 1000097, "name": "Jane Roe", "email": "jane.roe@example.com", "username": "jroe"}
      ],
      "values": {"-1": "Fails", " 0": "No score", "+1": "Verified"}
    },
    "Code-Review": {
      "all": [{"_account_id": 1000097, "username": "jroe"}],
      "values": {"-2": "This shall not be merged", "-1": "I would prefer this is not merged as is", " 0": "No score", "+1": "Looks good to me, but someone else must approve", "+2": "Looks good to me, approved"}
    }
  },
  "submit_requirements": [
    {"name": "Code-Review", "status": "UNSATISFIED", "is_legacy": false},
    {"name": "Verified", "status": "SATISFIED", "is_legacy": false},
    {"name": "No-Unresolved-Comments", "status": "NOT_APPLICABLE"}
  ],
  "revisions": {"184ebe53805e102605d11f6b143486d15c23a09c": {"_number": 1}}
}
"#;

#[test]
fn a_documented_change_info_is_read() {
    let change = parse_change(DOCUMENTED.as_bytes()).unwrap();
    assert_eq!(change.project, "myProject");
    assert_eq!(change.branch, "master");
    assert_eq!(change.number, 3965);
    assert_eq!(change.status, ChangeStatus::New);
    assert_eq!(change.owner.username.as_deref(), Some("jdoe"));
    assert_eq!(
        change.current_revision.as_deref(),
        Some("184ebe53805e102605d11f6b143486d15c23a09c")
    );
    let unmet: Vec<&str> = change
        .submit_requirements
        .iter()
        .filter(|r| !r.is_met())
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(unmet, ["Code-Review"]);
    let review = &change.labels["Code-Review"];
    assert_eq!(review.max_value(), Some(2));
    assert_eq!(review.all[0].value, None, "a reviewer who has not voted");
    assert_eq!(change.labels["Verified"].all[1].value, Some(1));
}

#[test]
fn an_unknown_status_or_garbage_is_handled() {
    let other = DOCUMENTED.replace("\"NEW\"", "\"DRAFT\"");
    assert_eq!(
        parse_change(other.as_bytes()).unwrap().status,
        ChangeStatus::Other
    );
    assert!(parse_change(b")]}'\n[]").is_err());
    assert!(parse_change(b"<html>").is_err());
}

#[test]
fn a_merged_change_is_kept_for_an_hour_and_any_other_for_seconds() {
    use moka::Expiry;
    let open = std::sync::Arc::new(parse_change(DOCUMENTED.as_bytes()).unwrap());
    let merged = std::sync::Arc::new(ChangeInfo {
        status: ChangeStatus::Merged,
        ..(*open).clone()
    });
    let at = std::time::Instant::now();
    let id = ChangeId::Number(3965);
    assert_eq!(ByState.expire_after_create(&id, &open, at), Some(OPEN_TTL));
    assert_eq!(
        ByState.expire_after_create(&id, &merged, at),
        Some(MERGED_TTL)
    );
    assert!(OPEN_TTL <= std::time::Duration::from_secs(10));
}
