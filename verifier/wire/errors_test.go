package wire_test

import (
	"encoding/json"
	"testing"

	"github.com/bootgate/bootgate/verifier/wire"
)

// TestErrorShape pins the one error envelope clients and docs rely on.
func TestErrorShape(t *testing.T) {
	b, err := json.Marshal(wire.Error{Code: wire.CodeUnknownSession, Message: "no such session"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"code":"unknown_session","message":"no such session"}`; string(b) != want {
		t.Errorf("envelope %s, want %s", b, want)
	}
	var e wire.Error
	if err := json.Unmarshal([]byte(`{"code":"csrf","message":"m"}`), &e); err != nil || e.Code != wire.CodeCSRF {
		t.Errorf("decoded %+v, %v", e, err)
	}
}
