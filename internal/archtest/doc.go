// Package archtest has no code: its test checks the module's dependency
// rules (DESIGN.md, "Layout") on the real import graph, from
// `go list -deps -json ./...`, and names the import chain of every
// violation:
//
//   - the agent (agent/...) imports nothing of the verifier but
//     verifier/wire: agent → boot and the verifier's wire types only;
//   - the verification code (verifier/eventlog, verifier/policy,
//     verifier/attest, verifier/seal, verifier/admission) is pure, bytes in and verified state
//     out: no net/http, no store or database, no TPM transport backend,
//     nothing of the agent;
//   - boot/... knows nothing of attestation: nothing of the verifier or
//     the agent, no attestation library;
//   - nothing but the qemu tree itself (whose demo is qemu/cmd/bootgate-demo)
//     imports qemu/...; tests may (go list -deps leaves test files out);
//   - test helpers (internal/*test, internal/*/*test) are imported only by
//     tests, other test helpers and the qemu tree.
package archtest
