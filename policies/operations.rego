# Strict operations: an operation may only be of a kind the policy knows, with the arguments the
# policy knows for that kind (data.aegis.config.operations.allowed_args), each a plain value.
# Anything else is denied, never judged on its declared effects alone: an argument such as
# `wipe_inventory` or `drop_saves` says what the operation would really do, and a policy that does
# not know it cannot weigh it. Axiom 2 (least privilege): what is not explicitly allowed is refused.
package aegis.operations

import rego.v1

import data.aegis.lib

allowed := data.aegis.config.operations.allowed_args

findings(inp) := lib.flatten([unknown_kinds(inp), unknown_args(inp), nested_args(inp)])

unknown_kinds(inp) := {f |
	some i
	op := inp.changeset.operations[i]
	not allowed[op.kind]
	f := lib.finding(
		"security", "operations.unknown_kind", "deny",
		sprintf("operation %d is of kind %s, which the policy does not know (known: %v)", [i, op.kind, sort(object.keys(allowed))]),
		{"operation": i, "kind": op.kind},
	)
}

unknown_args(inp) := {f |
	some i
	op := inp.changeset.operations[i]
	names := allowed[op.kind]
	extra := sort([k | some k in object.keys(object.get(op, "args", {})); not k in names])
	count(extra) > 0
	f := lib.finding(
		"security", "operations.unknown_args", "deny",
		sprintf("operation %d (%s) carries argument(s) %v the policy does not know (allowed: %v): what it would do cannot be judged", [i, op.kind, extra, names]),
		{"operation": i, "kind": op.kind, "unknown_args": extra, "allowed_args": names},
	)
}

# An allowed argument holds a plain value (string, number, boolean, null) or a list of them: a
# nested object could carry what the allow-list keeps out.
nested_args(inp) := {f |
	some i
	op := inp.changeset.operations[i]
	args := object.get(op, "args", {})
	some name in object.keys(args)
	not plain(args[name])
	f := lib.finding(
		"security", "operations.arg_not_plain", "deny",
		sprintf("argument %s of operation %d (%s) is a nested structure; arguments are plain values or lists of them", [name, i, op.kind]),
		{"operation": i, "kind": op.kind, "arg": name},
	)
}

scalar(v) if {
	not is_object(v)
	not is_array(v)
	not is_set(v)
}

plain(v) if scalar(v)

plain(v) if {
	is_array(v)
	every x in v {
		scalar(x)
	}
}
