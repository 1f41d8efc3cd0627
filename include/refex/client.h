/* librefex-client: the public C API for talking to a local refex-agent over its control
 * socket (ipc://DATA_DIR/control.sock, one JSON object per request and per reply; see
 * "Control protocol" in docs/protocol.md). It is what the refex CLI uses and what a
 * maternity or case-management system links with. It is not a network client: sealing,
 * signing and the broker link stay inside the agent.
 *
 * Every call returns a refex error code (REFEX_OK = 0, see refex/error.h). After a failure,
 * refex_client_error() says why, as "E_NAME: detail" (for a refusal by the agent, its own
 * typed error, e.g. "E_NOT_MEMBER: social-care is not a member of case C-1").
 * Results are JSON text, allocated by the library: free them with refex_client_free().
 * A client is not thread-safe: use one per thread. */
#ifndef REFEX_CLIENT_H
#define REFEX_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct refex_client refex_client;

/* Default time to wait for a reply, in milliseconds. */
#define REFEX_CLIENT_TIMEOUT_MS 35000

/* Opens a client for the agent whose configuration file is config_path: its data_dir
 * names the socket. Like sqlite3_open, *out is set even on failure (unless memory ran
 * out), so refex_client_error(*out) can say why; close it in every case. Errors:
 * E_INVAL (NULL argument), E_CONFIG (unreadable config, or no data_dir), E_UNAVAILABLE
 * (no control socket, or one nobody listens on: the agent is not running), E_DENIED (the
 * file modes of the socket or its directory keep this process out: it is neither the
 * agent's user nor in its control_group), E_IO, E_NOMEM, E_CRYPTO (libsodium would not
 * start). A process the agent itself refuses gets E_DENIED from each call. */
int refex_client_open(const char *config_path, refex_client **out);
/* The same, given the socket's path (without "ipc://") instead of a config file. */
int refex_client_open_socket(const char *socket_path, refex_client **out);
/* Closes the connection and frees the client. Accepts NULL and a NULL *c, and sets *c to
 * NULL, so calling it twice is harmless. */
void refex_client_close(refex_client **c);
/* How long each call waits for the agent's reply (milliseconds, > 0). E_INVAL otherwise. */
int refex_client_set_timeout(refex_client *c, int timeout_ms);

/* The last error as "E_NAME: detail"; "" after a success. Never NULL (also for c NULL).
 * Valid until the next call on c. */
const char *refex_client_error(const refex_client *c);
/* Only the detail part of the last error. Never NULL. */
const char *refex_client_error_detail(const refex_client *c);
/* Frees text returned by the library. NULL is fine. */
void refex_client_free(void *p);

/* Sends one request (a JSON object with a "cmd") and returns the agent's whole reply as
 * JSON text in *reply. Returns REFEX_OK for {"ok":true}; the agent's own code for
 * {"ok":false,...} (then *reply holds that error reply too); E_TIMEOUT if it did not
 * answer in time; E_UNAVAILABLE if nobody accepted the request on the socket (the agent
 * died); E_MALFORMED for a reply that is not one JSON object; E_JSON if json_text is not a
 * JSON object; E_TOO_BIG if it is over the agent's 64 MiB limit. *reply is NULL whenever
 * the agent did not answer. The socket is reset after a timeout, so the client stays
 * usable. */
int refex_client_request(refex_client *c, const char *json_text, char **reply);

/* ---- send --------------------------------------------------------------------------- */

typedef struct {
    const char *type;      /* "referral", "information-request", "case-update", ... */
    const char *const *to; /* recipient agency ids; may be empty for a case update */
    size_t n_to;
    const char *case_ref;   /* pseudonymous case reference, or NULL */
    const char *body_json;  /* the body as JSON (e.g. a Referral object), or NULL ... */
    const uint8_t *body_pb; /* ... a serialized refex.v1.Body (its member must match */
    size_t body_pb_len;     /*     type); exactly one of the two */
    long ttl_seconds;       /* 0: the agent's default (7 days) */
    int wait;               /* non-zero: wait until the broker has STORED it */
    /* The caller's own id for this message (e.g. its record number for the referral), or
     * NULL: 1 to 64 printable ASCII characters, no spaces (else E_INVAL). It makes the send
     * idempotent: sending again under the same local id (a retry after E_TIMEOUT or a
     * crash) with the same type, recipients, case and body sends nothing and returns the
     * first message's id and state; under the same local id with anything different, it is
     * refused with E_DUPLICATE. Unique per agency for as long as the agent keeps the
     * message; it stays in the agent (never sent to the broker or the recipients). */
    const char *local_id;
} refex_client_message;

/* Hands a message to the agent, which checks, seals, signs, records and sends it. The
 * lawful basis, purpose, consent and practitioner travel inside the body, and nothing is
 * defaulted: a body without every field its type requires (docs/protocol.md section 10.1:
 * e.g. a referral's subject.reference, lawful_basis.article6, urgency) is refused with
 * E_INVAL, the reply's "detail" naming each missing field path; the refusal is audited and
 * nothing is sealed or kept. A receiving agent refuses such a body too. id (33 bytes,
 * may be NULL) receives the 32-hex-character message id; reply (may be NULL) the whole
 * reply, whose "state" is "sent", "pending" or, with wait, "stored". A refusal by the
 * broker while waiting returns its code, with id still set.
 * E_TIMEOUT means the outcome is unknown: the agent may have committed and sent the
 * message after the client stopped waiting. With a local_id, send the same message again:
 * a repeat returns the first message's id and state (and "repeat": true in the reply)
 * and sends nothing; a repeat of a message the broker rejected returns the broker's code
 * again, with id set. Without a local_id, check refex_client_outbox_list before sending
 * again, or the recipient gets it twice. E_DUPLICATE: local_id is already taken by a
 * message with another type, recipients, case or body. */
int refex_client_send(refex_client *c, const refex_client_message *m, char id[33], char **reply);

/* Hands n messages (1 to REFEX_CLIENT_BATCH_MAX) to the agent in one request
 * ("send_batch"): each is checked, sealed, recorded and sent exactly as by
 * refex_client_send, and refused or accepted on its own; the agent commits them together.
 * It saves a round trip and the request's overhead per message, for a caller with a queue.
 * wait is not allowed (E_INVAL). ids[i] (may be NULL) receives message i's id ("" if it was
 * refused, except a repeat of a message the broker rejected, which names it), codes[i] (may
 * be NULL) REFEX_OK or the code it was refused with (the call's own code, for every message,
 * when the call fails as a whole); reply (may be
 * NULL) the whole reply, {"ok":true,"results":[one send reply per message, in order]}.
 * Returns REFEX_OK when the agent answered the batch, even if some messages were refused:
 * look at codes. A message the client itself can check (its type, its body's form, a
 * local id) fails the whole call before anything is sent. E_TIMEOUT: as for
 * refex_client_send, the outcome of every message is unknown; with local ids, send the
 * batch again. */
#define REFEX_CLIENT_BATCH_MAX 1024
int refex_client_send_batch(refex_client *c, const refex_client_message *m, size_t n,
                            char (*ids)[33], int *codes, char **reply);

/* ---- queries: each returns the agent's whole reply as JSON text in *out ------------- */

int refex_client_status(refex_client *c, char **out);
/* Where a message this agency sent is: broker state and each recipient's receipt.
 * message_id is its message id or the local id it was sent under (a 32-hex string is
 * tried as a message id first). */
int refex_client_message_status(refex_client *c, const char *message_id, char **out);
/* The whole inbox, oldest first (as refex_client_inbox_query(c, 0, 0, 0, out)). */
int refex_client_inbox_list(refex_client *c, char **out);
/* One inbox message, decrypted: {"ok":true,"messages":[the entry, with its body]}.
 * E_NOTFOUND: no such message. Message ids are unique per sender only: when two senders'
 * messages share the id, E_INVAL ("field": "from", "valid": the senders); then ask by
 * sender with refex_client_inbox_show_from. */
int refex_client_inbox_show(refex_client *c, const char *message_id, char **out);
int refex_client_inbox_show_from(refex_client *c, const char *message_id, const char *sender,
                                 char **out);

/* ---- consuming the inbox: by cursor, with acknowledgements, and waiting ------------- */
/* Every inbox message has a "cursor": a whole number, strictly increasing in the order
 * messages were committed to the inbox, never reused, kept across agent restarts. Each
 * entry also says "acked" (true once acknowledged, then with "acked_at_ms"). A consumer
 * keeps the last cursor it has taken into its own records, and asks for what came after.
 *
 * The inbox messages with cursor > after, by cursor, at most limit of them (0: all),
 * only the unacknowledged ones if unacked is non-zero. The reply is
 * {"ok":true,"messages":[...],"cursor":C}: C is the cursor of the last message in it, or
 * after if there is none, so the next call can always be made with after = C.
 * E_INVAL (a negative after or limit, named in the reply's "field"). */
int refex_client_inbox_query(refex_client *c, long long after, long long limit, int unacked,
                             char **out);
/* Says the receiving system has taken the message into its own records. Audited once (an
 * "ack" entry in the agent's audit log); the message stays in the inbox, listed with
 * "acked": true. Reply {"ok":true,"id":...,"acked_at_ms":...,"already":false}; acking
 * again is fine ("already": true, the first time kept, not audited again). E_NOTFOUND:
 * no inbox message has this id; E_INVAL: not a 32-hex message id. */
int refex_client_inbox_ack(refex_client *c, const char *message_id, char **out);
/* The same for the message with this id from sender. Message ids are unique per sender
 * only: when two senders' messages share an id, refex_client_inbox_ack refuses with
 * E_INVAL, the reply's "field" being "from" and "valid" the senders; ack each by its
 * sender (each inbox entry has its "sender"). E_NOTFOUND: no message with this id from
 * sender. */
int refex_client_inbox_ack_from(refex_client *c, const char *message_id, const char *sender,
                                char **out);
/* Blocks until there are inbox messages with cursor > after, or timeout_ms passes (1 to
 * 300000, else E_INVAL): returns REFEX_OK with a reply as refex_client_inbox_query's,
 * whose "messages" is empty (and "cursor" is after) when the time ran out. Messages there
 * already are returned at once; a delivery committed during the wait is returned within
 * the same turn of the agent's loop. The call waits for the reply timeout_ms longer than
 * the client's timeout (refex_client_set_timeout). E_BUSY: the agent holds 64 waiting
 * clients already; try again later. */
int refex_client_inbox_wait(refex_client *c, long long after, int timeout_ms, char **out);

/* A watch: the same wait, for an event loop. refex_client_watch_start sends a wait for
 * messages with cursor > after and returns without waiting for the answer; the client
 * then makes no other call until refex_client_watch_stop (each returns E_BUSY): use a
 * second client for anything else. refex_client_fd gives a descriptor to poll() for
 * POLLIN; refex_client_watch_next reads without blocking:
 *   REFEX_OK      *out is a page of new messages (as refex_client_inbox_query's reply);
 *                 the watch has moved on to its cursor and asked again by itself;
 *   E_TIMEOUT     nothing yet: poll again;
 *   E_UNAVAILABLE the agent went away or restarted (its request was lost); the next call
 *                 asks again from the last cursor, so nothing is missed or repeated; the
 *                 descriptor may have changed: call refex_client_fd again;
 *   another code  the agent refused the wait (*out holds its reply; e.g. E_BUSY); the
 *                 next call asks again.
 * The descriptor follows ZeroMQ's ZMQ_FD rules: it is edge-triggered and says only that
 * something may have changed. After it polls readable, and after watch_start, call
 * refex_client_watch_next until it returns something other than REFEX_OK before polling
 * again. Poll with a timeout (a second, say) and call refex_client_watch_next after a
 * timeout too: that is how a lost agent is noticed (its control socket replaced or gone,
 * or no answer 30 s after asking). A call may wait up to half a second to reach an agent
 * that is coming back. E_INVAL: after < 0, or no watch started. */
int refex_client_watch_start(refex_client *c, long long after);
int refex_client_fd(refex_client *c, int *fd);
int refex_client_watch_next(refex_client *c, char **out);
/* Ends the watch (forgetting its outstanding request); the client can make calls again.
 * Harmless without a watch. */
void refex_client_watch_stop(refex_client *c);
int refex_client_outbox_list(refex_client *c, char **out);
int refex_client_referrals(refex_client *c, char **out);
/* Information requests sent; only the overdue ones if overdue is non-zero. */
int refex_client_requests(refex_client *c, int overdue, char **out);
/* Audit entries with seq > after, at most limit (0: all). */
int refex_client_audit_list(refex_client *c, long long after, long long limit, char **out);

/* ---- cases -------------------------------------------------------------------------- */

/* Lead only: opens a case under a pseudonymous reference. */
int refex_client_case_open(refex_client *c, const char *case_ref, char **out);
/* Lead only: grants member the case's updates (types: CaseUpdateType names, NULL/0 for
 * all; until_ms 0 for no end), or revokes the membership if revoke is non-zero. */
int refex_client_case_grant(refex_client *c, const char *case_ref, const char *member,
                            const char *const *types, size_t n_types, long long until_ms,
                            int revoke, char **out);
/* Lead only: ends member's membership; later updates do not reach it. */
int refex_client_case_revoke(refex_client *c, const char *case_ref, const char *member, char **out);
int refex_client_case_members(refex_client *c, const char *case_ref, char **out);
/* Publishes a case update (body_json: a CaseUpdate object) to the case's current members
 * that are granted and subscribed to its type, and to the lead; the agent picks them. */
int refex_client_case_publish(refex_client *c, const char *case_ref, const char *body_json,
                              char id[33], char **out);
/* Subscribes to (or with unsubscribe, stops) one case's updates, or every case this
 * agency is a member of when case_ref is NULL. */
int refex_client_case_subscribe(refex_client *c, const char *case_ref, const char *const *types,
                                size_t n_types, int unsubscribe, char **out);

#ifdef __cplusplus
}
#endif

#endif
