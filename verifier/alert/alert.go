// Package alert delivers incident events to a webhook: JSON with its text
// escaped (textsafe.JSON), one POST per event, in the order they happened, each until it is accepted (2xx), with
// exponential backoff while the receiver is down. Events wait in the store's
// outbox, written in the same transaction as the change they report, so none
// is lost when the appliance or the receiver restarts. Appliances sharing
// one database take turns: each delivers only alerts it has claimed in the
// outbox (store.DB.ClaimAlerts), one appliance at a time, so each alert is
// posted once, in order. A receiver may still see an event twice (after a
// crash between delivery and marking, or a post cut off at the end of its
// claim); the event's id lets it drop the duplicate.
package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/store"
)

// Outbox is where events wait.
type Outbox interface {
	// ClaimAlerts returns the oldest undelivered alerts, at most limit,
	// claimed for this appliance for lease; none while another appliance
	// holds a claim on them.
	ClaimAlerts(ctx context.Context, limit int, lease time.Duration) ([]store.Alert, error)
	AlertDelivered(ctx context.Context, id int64) error
}

// Notifier posts events to URL.
type Notifier struct {
	URL      string
	HTTP     *http.Client
	Outbox   Outbox
	Logger   *slog.Logger
	Poll     time.Duration // how often to look for new events (default 1s)
	MinRetry time.Duration // first retry delay (default 1s)
	MaxRetry time.Duration // longest retry delay (default 1m)
	// Claim is how long a claim on outbox alerts lasts (default 1m). Each
	// post must end within the claim (it is cut off at three quarters of
	// it), so that no other appliance takes over an alert being posted.
	Claim time.Duration
	// Failures counts failed delivery attempts (for metrics).
	Failures atomic.Uint64
}

// Message is the webhook body.
type Message struct {
	ID    int64           `json:"id"`
	Time  time.Time       `json:"time"`
	Event json.RawMessage `json:"event"`
}

// Run delivers until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	poll, minR, maxR := n.Poll, n.MinRetry, n.MaxRetry
	if poll <= 0 {
		poll = time.Second
	}
	if minR <= 0 {
		minR = time.Second
	}
	if maxR <= 0 {
		maxR = time.Minute
	}
	claim := n.Claim
	if claim <= 0 {
		claim = time.Minute
	}
	log := n.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	retry := minR
	for {
		wait := poll
		claimed := time.Now()
		pending, err := n.Outbox.ClaimAlerts(ctx, 100, claim)
		if err != nil && ctx.Err() == nil {
			log.Error("webhook: read outbox", "err", err)
		}
		// Posts end three quarters into the claim, before another
		// appliance may take the alerts over.
		end := claimed.Add(claim * 3 / 4)
		for _, a := range pending {
			if !time.Now().Before(end) {
				wait = 0 // claim the rest again
				break
			}
			pctx, cancel := context.WithDeadline(ctx, end)
			err := n.post(pctx, a)
			cancel()
			if err != nil {
				n.Failures.Add(1)
				log.Warn("webhook: delivery failed; will retry", "alert", a.ID, "in", retry, "err", err)
				wait = retry
				retry = min(2*retry, maxR)
				break // in order: nothing after a failed event goes first
			}
			retry = minR
			if err := n.Outbox.AlertDelivered(ctx, a.ID); err != nil {
				log.Error("webhook: mark delivered", "alert", a.ID, "err", err)
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (n *Notifier) post(ctx context.Context, a store.Alert) error {
	body, err := json.Marshal(Message{ID: a.ID, Time: a.Time, Event: a.Event})
	if err != nil {
		return err
	}
	// Receivers show these to people (chat, tickets): text from hosts
	// goes out escaped, as everywhere it is shown.
	if body, err = textsafe.JSON(body); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.HTTP.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("receiver answered %s", resp.Status)
	}
	return nil
}
