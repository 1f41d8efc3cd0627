"""The independent side of the e2e_proto3_json test (tests/e2e/proto3_json_test.c): Debian's
python3-protobuf (google.protobuf.json_format, the reference implementation of the proto3
JSON mapping) writes a complete referral for refex to send, and parses what refex's inbox
shows. Not a test by itself: the C test runs it, with the module protoc made from
proto/refex.proto, under /usr/bin/python3.

  proto3_json.py MODULE_DIR write FORM OUT   writes the referral's JSON in FORM:
      camel      MessageToJson's default: lowerCamelCase names, enums by name
      proto      the proto field names, keys sorted
      ints       lowerCamelCase, enums as numbers, no indentation
      changed    as camel, with another summary (a different submission)
  proto3_json.py MODULE_DIR check IN         IN is `refex inbox show ID --json`; its body
      must parse as a Referral equal to the one written
Exit 0 on success, 1 (with the reason on stderr) otherwise.
"""

import json
import sys


def referral(pb, summary="Booking at 12 weeks; concerns shared with consent not sought"):
    """Every field a sending agent requires (lib/body_rules.c), nested messages, enums,
    repeated fields of messages and enums, bytes whose base64 has '+' and '/', and
    multi-word names whose JSON names differ."""
    r = pb.Referral(
        kind=pb.REFERRAL_PRE_BIRTH,
        urgency=pb.URGENCY_URGENT,
        consent=pb.CONSENT_NOT_SOUGHT_SAFEGUARDING,
        purpose=pb.PURPOSE_SAFEGUARDING,
        summary=summary,
        conversation_id="CONV-PY-1",
        concerns=[pb.CONCERN_MENTAL_HEALTH, pb.CONCERN_DOMESTIC_ABUSE],
    )
    r.subject.kind = pb.SUBJECT_UNBORN
    r.subject.reference = "UB-PY-0001"
    r.subject.estimated_due_date = "2027-03-01"
    r.subject.gestation_weeks = 14
    r.subject.nhs_number = "9990001112"
    mother = r.parents.add()
    mother.reference = "P-PY-1"
    mother.date_of_birth = "1995-06-30"
    mother.relationship = "mother"
    father = r.parents.add()
    father.nhs_number = "9990001113"
    father.relationship = "father"
    r.referrer.reference = "MW-PY-0001"
    r.referrer.role = "community midwife"
    r.referrer.organisation = "Example maternity unit"
    r.lawful_basis.article6 = pb.ARTICLE6_PUBLIC_TASK
    r.lawful_basis.article9 = pb.ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST
    r.lawful_basis.note = "Children Act 1989 s.47"
    att = r.attachments.add()
    att.filename = "booking.bin"
    att.content_type = "application/octet-stream"
    att.data = bytes([0xFB, 0xFF, 0xBF, 0x00, 0x01, 0x80])
    return r


def write(pb, json_format, form, path):
    if form == "proto":
        text = json_format.MessageToJson(referral(pb), preserving_proto_field_name=True,
                                         sort_keys=True)
    elif form == "ints":
        text = json_format.MessageToJson(referral(pb), use_integers_for_enums=True, indent=None)
    elif form == "changed":
        text = json_format.MessageToJson(referral(pb, summary="Booking at 13 weeks"))
    elif form == "camel":
        text = json_format.MessageToJson(referral(pb))
    else:
        return "unknown form " + form
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return None


def check(pb, json_format, path):
    with open(path, encoding="utf-8") as f:
        shown = json.load(f)
    body = shown.get("body")
    if not isinstance(body, dict):
        return "no body in the inbox entry: " + ", ".join(sorted(shown))
    try:
        got = json_format.Parse(json.dumps(body), pb.Referral())
    except json_format.ParseError as e:
        return "json_format refused refex's body: %s" % e
    want = referral(pb)
    if got != want:
        return "refex showed another referral:\n--- sent\n%s--- shown\n%s" % (want, got)
    return None


def main(argv):
    if len(argv) < 4:
        return "usage: proto3_json.py MODULE_DIR write FORM OUT | check IN"
    sys.path.insert(0, argv[1])
    try:
        from google.protobuf import json_format
        import refex_pb2 as pb
    except ImportError as e:
        return "%s (python3-protobuf missing? run deploy/install-deps.sh)" % e
    if argv[2] == "write" and len(argv) == 5:
        return write(pb, json_format, argv[3], argv[4])
    if argv[2] == "check" and len(argv) == 4:
        return check(pb, json_format, argv[3])
    return "bad arguments: " + " ".join(argv[2:])


if __name__ == "__main__":
    err = main(sys.argv)
    if err:
        print("proto3_json.py: " + err, file=sys.stderr)
        sys.exit(1)
