/* SPDX-License-Identifier: MIT */
/*
 * p2p.h - the public interface of the P2P module (DESIGN.md section 5). This first part holds
 * the protocol cores that every libp2p connection passes through before any application
 * protocol runs:
 *
 *   1. multiaddr      - text <-> binary self-describing addresses (/ip4/../tcp/../p2p/..)
 *   2. multistream    - multistream-select 1.0 protocol negotiation (/multistream/1.0.0)
 *   3. yamux          - the stream multiplexer (/yamux/1.0.0)
 *   4. pnet           - private-network PSK stream cipher (XSalsa20) and PSK file parser
 *
 * The protocol cores (2-4) do no I/O and read no clock of their own: the host feeds them the
 * bytes it read from a socket and writes out the bytes they queue, so they run the same in a
 * libuv loop, a unit test or a fuzzer. Objects belong to one thread (STYLE.md rule 5).
 */
#ifndef DC_P2P_H
#define DC_P2P_H

#include "base/base.h"

/* ============================================================================================
 * 1. Multiaddr
 *
 * A multiaddr is kept in its binary form, in a fixed-size value type so that address lists
 * can be copied and stored without allocation. Every dc_multiaddr that comes out of the
 * functions below has been validated: its components are known protocols with well-formed
 * values, so the accessors need not check again.
 *
 * Supported protocols (code, text name): ip4 (4), tcp (6), udp (273), dccp (33), ip6 (41),
 * ip6zone (42), dns (53), dns4 (54), dns6 (55), dnsaddr (56), sctp (132), udt (301), utp (302),
 * p2p (421, text alias "ipfs" accepted when parsing), p2p-circuit (290), webrtc-direct (280),
 * webrtc (281), tls (448), sni (449), noise (454), quic (460), quic-v1 (461),
 * webtransport (465), https (443), ws (477), wss (478), http (480). Others are DC_EUNSUPPORTED.
 * ========================================================================================== */

/* Protocol codes from the multiformats table (multiaddr/protocols.csv). */
#define DC_MA_IP4           4u
#define DC_MA_TCP           6u
#define DC_MA_DCCP          33u
#define DC_MA_IP6           41u
#define DC_MA_IP6ZONE       42u
#define DC_MA_DNS           53u
#define DC_MA_DNS4          54u
#define DC_MA_DNS6          55u
#define DC_MA_DNSADDR       56u
#define DC_MA_SCTP          132u
#define DC_MA_UDP           273u
#define DC_MA_UDT           301u
#define DC_MA_UTP           302u
#define DC_MA_P2P           421u
#define DC_MA_P2P_CIRCUIT   290u
#define DC_MA_WEBRTC_DIRECT 280u
#define DC_MA_WEBRTC        281u
#define DC_MA_HTTPS         443u
#define DC_MA_TLS           448u
#define DC_MA_SNI           449u
#define DC_MA_NOISE         454u
#define DC_MA_QUIC          460u
#define DC_MA_QUIC_V1       461u
#define DC_MA_WEBTRANSPORT  465u
#define DC_MA_WS            477u
#define DC_MA_WSS           478u
#define DC_MA_HTTP          480u

/* Largest binary multiaddr we hold, and the text buffer size that any of them fits in. */
#define DC_MULTIADDR_MAX_LEN  512
#define DC_MULTIADDR_TEXT_MAX 4096
/* Largest multihash accepted in a /p2p/ component (an identity multihash of an Ed25519 key is
 * 38 bytes, a sha2-256 one 34). */
#define DC_MULTIADDR_MAX_MULTIHASH 128
/* Longest string value (dns names, sni, ip6zone). */
#define DC_MULTIADDR_MAX_NAME 255

struct dc_multiaddr {
    size_t len;                          /* bytes used in 'bytes' */
    uint8_t bytes[DC_MULTIADDR_MAX_LEN]; /* binary form: (varint code, value)* */
};

/*
 * Where a parse failed, for one clear error line: "multiaddr: ip4 at offset 5: bad address".
 * 'offset' is the byte offset of the offending component in the input (text or binary);
 * 'component' the protocol name, or "?" when the protocol itself was not recognised;
 * 'reason' a static string.
 */
struct dc_multiaddr_error {
    size_t offset;
    char component[24];
    const char *reason;
};

/* One component of a validated multiaddr. 'value' points into the multiaddr (borrowed). For
 * dns/sni/ip6zone and p2p, 'value' is the payload without its varint length prefix. */
struct dc_multiaddr_component {
    uint32_t code;
    const char *name; /* static protocol name, e.g. "ip4" */
    const uint8_t *value;
    size_t value_len;
};

/*
 * Parses the text form ("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...") into '*out'.
 * 'text' is borrowed and NUL-terminated. 'err' may be NULL; on failure it says where.
 * Returns 0; DC_ECORRUPT for malformed text (bad value, missing value, empty component, not
 * starting with '/'); DC_EUNSUPPORTED for an unknown protocol name; DC_ELIMIT when the binary
 * form would exceed DC_MULTIADDR_MAX_LEN. '*out' is undefined on failure.
 */
DC_MUST_CHECK int dc_multiaddr_parse(const char *text, struct dc_multiaddr *out,
                                     struct dc_multiaddr_error *err);

/*
 * Validates the binary form p[0..len) (as received in identify or a DHT record) and copies it
 * into '*out'. 'err' may be NULL. Returns 0; DC_ECORRUPT for a truncated or malformed
 * component (bad varint, value too short, invalid multihash, forbidden byte in a name);
 * DC_EUNSUPPORTED for an unknown protocol code; DC_ELIMIT when len > DC_MULTIADDR_MAX_LEN.
 * An empty input is a valid (empty) multiaddr.
 */
DC_MUST_CHECK int dc_multiaddr_from_bytes(const uint8_t *p, size_t len, struct dc_multiaddr *out,
                                          struct dc_multiaddr_error *err);

/*
 * Writes the canonical text form of 'ma' into out (capacity 'cap', NUL-terminated).
 * Returns the string length, or DC_ELIMIT when 'cap' is too small (DC_MULTIADDR_TEXT_MAX is
 * always enough).
 */
DC_MUST_CHECK int dc_multiaddr_format(const struct dc_multiaddr *ma, char *out, size_t cap);

/*
 * Iterates the components of 'ma'. Start with *pos = 0; each call fills '*c' and advances
 * *pos. Returns 1 when a component was read, 0 at the end.
 */
int dc_multiaddr_next(const struct dc_multiaddr *ma, size_t *pos, struct dc_multiaddr_component *c);

/* True when both hold the same bytes. */
bool dc_multiaddr_equal(const struct dc_multiaddr *a, const struct dc_multiaddr *b);

/* What a host needs to dial: the leading host and transport components of a multiaddr. */
struct dc_multiaddr_target {
    uint32_t host_proto; /* DC_MA_IP4, DC_MA_IP6, DC_MA_DNS, DC_MA_DNS4 or DC_MA_DNS6 */
    uint32_t transport;  /* DC_MA_TCP or DC_MA_UDP */
    uint16_t port;
    uint8_t ip[16];                       /* raw address: 4 bytes for ip4, 16 for ip6 */
    char host[DC_MULTIADDR_MAX_NAME + 1]; /* dotted ip4, RFC 5952 ip6, or the DNS name */
};

/*
 * Extracts the dial target from 'ma', which must start with a host component (ip4, ip6, dns,
 * dns4, dns6) followed by tcp or udp; later components (/p2p/, /quic-v1, ...) are allowed and
 * ignored. Returns 0, or DC_EUNSUPPORTED when 'ma' does not start that way.
 */
DC_MUST_CHECK int dc_multiaddr_target(const struct dc_multiaddr *ma,
                                      struct dc_multiaddr_target *out);

/*
 * Finds the last /p2p/ component. On success '*mh' points into 'ma' (borrowed, valid while
 * 'ma' is unchanged) at the peer's multihash and '*mh_len' holds its length.
 * Returns 0, or DC_ENOENT when 'ma' has no /p2p/ component.
 */
DC_MUST_CHECK int dc_multiaddr_peer_id(const struct dc_multiaddr *ma, const uint8_t **mh,
                                       size_t *mh_len);

/*
 * Appends /p2p/<mh> to 'ma'. 'mh' (a multihash, borrowed) must be a valid multihash of at most
 * DC_MULTIADDR_MAX_MULTIHASH bytes. Returns 0, DC_EINVAL for an invalid multihash, or
 * DC_ELIMIT when the result would not fit ('ma' unchanged on failure).
 */
DC_MUST_CHECK int dc_multiaddr_append_p2p(struct dc_multiaddr *ma, const uint8_t *mh,
                                          size_t mh_len);

/* Removes a trailing /p2p/ component, if any, leaving the transport address. Returns true when
 * one was removed. */
bool dc_multiaddr_strip_p2p(struct dc_multiaddr *ma);

/* ============================================================================================
 * 2. multistream-select 1.0
 *
 * Messages are <uvarint length><text>"\n" with the newline counted in the length. The
 * initiator sends "/multistream/1.0.0\n" and its first proposal at once (pipelined), then the
 * next proposal after each "na\n"; the responder answers the header with the header and each
 * proposal with an echo (accepted) or "na\n". "ls\n" is answered with the supported list.
 *
 * Driving it: create, write out dc_mss_output() (the initiator has bytes queued at once), feed
 * every chunk read from the socket to dc_mss_feed() until it returns 1 (done) or an error,
 * writing out the output after each call. When it returns 1, in[used..len) of that call is
 * the first data of the negotiated protocol and belongs to the caller.
 * ========================================================================================== */

#define DC_MSS_PROTOCOL_ID "/multistream/1.0.0"
/* Longest message accepted or sent, newline included. */
#define DC_MSS_MAX_MESSAGE 1024
/* Most protocols one side may offer (responder: proposals it answers before giving up). */
#define DC_MSS_MAX_PROPOSALS 32

struct dc_mss;

struct dc_mss_config {
    bool initiator;
    /* Initiator: protocols to propose, in order of preference. Responder: protocols it
     * accepts. 1..DC_MSS_MAX_PROPOSALS names, each non-empty, shorter than DC_MSS_MAX_MESSAGE,
     * without '\n' or NUL, and not "na" or "ls". Copied by dc_mss_new(). */
    const char *const *protocols;
    size_t n_protocols;
    /* Initiator only, with exactly one protocol: the caller may start writing protocol data
     * right after the queued negotiation bytes, before the echo arrives (saves a round trip;
     * the peer resets the stream if it does not speak the protocol). dc_mss_protocol()
     * answers at once; dc_mss_feed() must still be fed until it returns 1, to check the echo
     * and strip it from the incoming data. */
    bool lazy;
};

/*
 * Creates a negotiation. 'cfg' and its strings are borrowed (copied). An initiator queues its
 * header and first proposal at once. Returns 0 with '*out' owning the object (release with
 * dc_mss_free), DC_EINVAL for an invalid config, or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_mss_new(const struct dc_mss_config *cfg, struct dc_mss **out);

/* Releases 'm'; NULL is a no-op. */
void dc_mss_free(struct dc_mss *m);

/*
 * Consumes received bytes in[0..len). Stops right after the message that completes the
 * negotiation, storing in '*used' how many bytes it took (all of them unless it returned 1).
 * May queue output. Returns:
 *   1   negotiated: dc_mss_protocol() names the protocol; in[*used..len) is protocol data;
 *   0   more input needed;
 *   DC_EPROTO       the peer does not speak multistream 1.0, answered out of turn, or refused
 *                   every proposal (initiator) / sent an unexpected message;
 *   DC_ECORRUPT     a malformed message (bad varint, no trailing newline, NUL byte);
 *   DC_ELIMIT       a message longer than DC_MSS_MAX_MESSAGE, or too many proposals;
 *   DC_ENOMEM;
 *   DC_ESTATE       called after it already returned 1 or an error.
 * Errors are final: the host should close the stream or connection.
 */
DC_MUST_CHECK int dc_mss_feed(struct dc_mss *m, const uint8_t *in, size_t len, size_t *used);

/* Bytes queued for the peer (borrowed, valid until the next call on 'm'). */
const uint8_t *dc_mss_output(const struct dc_mss *m, size_t *len);
/* Marks the first n queued bytes as written. */
void dc_mss_output_consume(struct dc_mss *m, size_t n);

/* The negotiated protocol (borrowed, lives as long as 'm'), or NULL while undecided. A lazy
 * initiator reports its only protocol from the start. */
const char *dc_mss_protocol(const struct dc_mss *m);

/* ============================================================================================
 * 3. yamux
 *
 * One dc_yamux session per connection. Streams are named by their 32-bit id (odd: opened by
 * the client, i.e. the dialer; even: by the server) rather than by pointers, so a stream the
 * peer resets can never leave the application holding a dangling pointer: a call with an id
 * that is gone returns DC_ENOENT.
 *
 * Receiving is zero-copy: data frames are handed to on_data in place, piece by piece as they
 * arrive, and the session keeps no receive buffer. The application owns what it has been
 * given and calls dc_yamux_stream_consume() once it has processed bytes; that is what grants
 * window back to the peer, so an application that stops consuming holds at most one receive
 * window per stream. Sending copies into one output buffer that the host drains to the
 * socket; it is capped (max_output), and a stream never sends past the peer's window.
 *
 * Callbacks run inside dc_yamux_feed() (and on_close also inside dc_yamux_free()). Inside
 * them the application may call any dc_yamux_* function except dc_yamux_free() and
 * dc_yamux_feed().
 * ========================================================================================== */

#define DC_YAMUX_PROTOCOL_ID "/yamux/1.0.0"
#define DC_YAMUX_HEADER_LEN  12
/* The window every stream starts with, by the spec. */
#define DC_YAMUX_INITIAL_WINDOW (256u * 1024u)
/* Largest data frame we send; a write is split into frames of at most this (go-libp2p and
 * js-libp2p send 64 KiB frames too, and some receivers refuse frames over 1 MiB). */
#define DC_YAMUX_MAX_FRAME_DATA (64u * 1024u)
/* Outbound streams that may await the peer's ACK at once (libp2p yamux spec). */
#define DC_YAMUX_MAX_ACK_BACKLOG 256

/* Frame types, flags and go-away codes from the spec. */
#define DC_YAMUX_TYPE_DATA          0
#define DC_YAMUX_TYPE_WINDOW_UPDATE 1
#define DC_YAMUX_TYPE_PING          2
#define DC_YAMUX_TYPE_GO_AWAY       3
#define DC_YAMUX_FLAG_SYN           0x1
#define DC_YAMUX_FLAG_ACK           0x2
#define DC_YAMUX_FLAG_FIN           0x4
#define DC_YAMUX_FLAG_RST           0x8
#define DC_YAMUX_GO_AWAY_NORMAL     0
#define DC_YAMUX_GO_AWAY_PROTOCOL   1
#define DC_YAMUX_GO_AWAY_INTERNAL   2

struct dc_yamux;

/* All callbacks get the session's 'ud'; stream callbacks also the stream id and the stream's
 * user pointer (set by on_stream_open or dc_yamux_stream_set_user). Any may be NULL. */
struct dc_yamux_callbacks {
    /* The peer opened stream 'id'. Set '*stream_user' if wanted. Return 0 to accept (an ACK
     * is queued) or a negative code to refuse (an RST is queued; no further callbacks for
     * 'id'). When NULL, every inbound stream is refused. */
    int (*on_stream_open)(void *ud, uint32_t id, void **stream_user);
    /* n > 0 bytes of stream data, borrowed for the call. Count them against the window until
     * dc_yamux_stream_consume() is called for them. */
    void (*on_data)(void *ud, uint32_t id, void *stream_user, const uint8_t *p, size_t n);
    /* The peer half-closed: no more data will come; the stream may still be written. */
    void (*on_fin)(void *ud, uint32_t id, void *stream_user);
    /* The peer's window for the stream opened up again after writes were held back by it. */
    void (*on_writable)(void *ud, uint32_t id, void *stream_user);
    /* The stream is gone and 'id' is invalid from now on; release 'stream_user'. 'err' is 0
     * when both sides closed cleanly, -ECONNRESET when the peer reset it, DC_EPROTO or
     * DC_ELIMIT when the session failed, DC_ECLOSED when the session was freed. Not called
     * for streams the application reset itself. */
    void (*on_close)(void *ud, uint32_t id, void *stream_user, int err);
    /* Answer to dc_yamux_ping(): round trip in microseconds (0 without a clock). */
    void (*on_ping)(void *ud, uint64_t rtt_us);
    /* The peer sent Go Away with 'code' (DC_YAMUX_GO_AWAY_*): it opens and accepts no new
     * streams; existing ones continue. */
    void (*on_go_away)(void *ud, uint32_t code);
    /* Optional monotonic clock for ping RTT, in microseconds. */
    uint64_t (*now_us)(void *ud);
};

struct dc_yamux_config {
    bool is_client;       /* true on the dialing side: it opens odd-numbered streams */
    uint32_t max_streams; /* streams open at once, both directions (default 256) */
    /* Receive window granted per stream, >= DC_YAMUX_INITIAL_WINDOW (default 4 MiB, so one
     * stream can fill a fast link), subject to max_buffered. */
    uint32_t recv_window;
    /* Cap on queued, unwritten output bytes for data (default 4 MiB); control frames may use
     * 64 KiB more. */
    size_t max_output;
    /* Budget for the sum of all streams' receive windows (default 64 MiB): a stream gets
     * more than the spec's initial 256 KiB only while the sum stays within it. So the peer can
     * make the application hold at most max_buffered + 256 KiB * max_streams unconsumed
     * bytes. */
    uint64_t max_buffered;
    struct dc_yamux_callbacks cb;
    void *ud;
};

/* Fills 'cfg' with the defaults above, no callbacks, server side. */
void dc_yamux_config_default(struct dc_yamux_config *cfg);

/*
 * Creates a session. 'cfg' is copied. Returns 0 with '*out' owning the session (release with
 * dc_yamux_free), DC_EINVAL for a bad config (recv_window below the initial window,
 * max_streams 0 or above 65536, max_output below 64 KiB), or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_yamux_new(const struct dc_yamux_config *cfg, struct dc_yamux **out);

/* Frees the session; on_close(DC_ECLOSED) fires for each stream still open. NULL: no-op. */
void dc_yamux_free(struct dc_yamux *y);

/*
 * Consumes received bytes in[0..len) (any split: partial frames are kept), firing callbacks.
 * Returns 0 when all were consumed, or a final error: DC_EPROTO on a protocol violation
 * (bad version or type, data beyond the window we granted, data after FIN, duplicate SYN,
 * wrong stream id parity, window overflow) after queueing Go Away (protocol error) and closing
 * every stream with on_close(DC_EPROTO); DC_ELIMIT when control frames the peer provoked
 * would overflow the output cap (the peer is not reading); DC_ENOMEM. After an error every
 * call returns the same error; write out the output (it ends with the Go Away) and close.
 */
DC_MUST_CHECK int dc_yamux_feed(struct dc_yamux *y, const uint8_t *in, size_t len);

/* Bytes queued for the peer (borrowed, valid until the next call on 'y'). */
const uint8_t *dc_yamux_output(const struct dc_yamux *y, size_t *len);
/* Marks the first n queued bytes as written to the socket. */
void dc_yamux_output_consume(struct dc_yamux *y, size_t n);

/*
 * Opens a stream (queues a window update with SYN; data may follow at once). '*id' gets its
 * id. 'stream_user' is stored for callbacks. Returns 0; DC_ECLOSED after either side sent
 * Go Away or the session failed; DC_ELIMIT at max_streams or when the stream ids ran out;
 * DC_EAGAIN while DC_YAMUX_MAX_ACK_BACKLOG opened streams await the peer's ACK; DC_ENOMEM.
 */
DC_MUST_CHECK int dc_yamux_stream_open(struct dc_yamux *y, void *stream_user, uint32_t *id);

/* Replaces the user pointer of stream 'id'. Returns 0 or DC_ENOENT. */
DC_MUST_CHECK int dc_yamux_stream_set_user(struct dc_yamux *y, uint32_t id, void *stream_user);

/*
 * Queues up to 'len' bytes of p (copied) on stream 'id': as many as the peer's window and the
 * output cap allow; '*written' tells how many (0 when both are full: wait for on_writable or
 * for the output to drain). Returns 0; DC_ENOENT for an unknown id; DC_ESTATE after
 * dc_yamux_stream_close(); DC_ECLOSED when the session failed; DC_ENOMEM.
 */
DC_MUST_CHECK int dc_yamux_stream_write(struct dc_yamux *y, uint32_t id, const void *p, size_t len,
                                        size_t *written);

/*
 * The copy-free form of dc_yamux_stream_write() for a caller that places the payload itself
 * (the host assembles it straight into its socket write buffer): takes send window for up to
 * 'len' bytes on stream 'id' (at most DC_YAMUX_MAX_FRAME_DATA) and writes the header of that
 * data frame to hdr[0..DC_YAMUX_HEADER_LEN); '*n' gets the payload bytes granted, 0 when the
 * window is closed (on_writable fires once it opens; this is answered even while output is
 * queued). The caller must send the header and then exactly '*n' payload bytes right after
 * everything dc_yamux_output() held, so a frame is only granted while that output is empty.
 * Returns 0; DC_EINVAL when len is 0; DC_ESTATE while output is queued or after
 * dc_yamux_stream_close(); DC_ENOENT for an unknown id; DC_ECLOSED when the session failed.
 */
DC_MUST_CHECK int dc_yamux_stream_frame(struct dc_yamux *y, uint32_t id, size_t len,
                                        uint8_t hdr[DC_YAMUX_HEADER_LEN], size_t *n);

/* Bytes the peer's window lets stream 'id' send now (0 for an unknown stream). */
size_t dc_yamux_stream_send_window(const struct dc_yamux *y, uint32_t id);

/*
 * Tells the session the application has processed 'n' more bytes delivered by on_data on
 * stream 'id'; window updates are queued as credit accumulates. Returns 0; DC_ENOENT for an
 * unknown id (fine to ignore after on_close); DC_EINVAL when n exceeds the bytes delivered
 * and not yet consumed; DC_ELIMIT when the output cap is hit.
 */
DC_MUST_CHECK int dc_yamux_stream_consume(struct dc_yamux *y, uint32_t id, size_t n);

/*
 * Half-closes stream 'id' (queues FIN): no more writes, data may still arrive. When the peer
 * has already closed its side, the stream ends here and on_close(0) fires before returning.
 * Returns 0; DC_ENOENT; DC_ESTATE when already closed; DC_ELIMIT on a full output.
 */
DC_MUST_CHECK int dc_yamux_stream_close(struct dc_yamux *y, uint32_t id);

/*
 * Resets stream 'id' (queues RST) and forgets it at once; on_close does not fire. Returns 0,
 * DC_ENOENT, or DC_ELIMIT on a full output (the stream is forgotten regardless).
 */
DC_MUST_CHECK int dc_yamux_stream_reset(struct dc_yamux *y, uint32_t id);

/*
 * Sends a ping; on_ping reports the round trip. Returns 0, DC_EBUSY while a ping is
 * outstanding, DC_ECLOSED when the session failed, DC_ELIMIT on a full output.
 */
DC_MUST_CHECK int dc_yamux_ping(struct dc_yamux *y);

/*
 * Queues Go Away with 'code' (DC_YAMUX_GO_AWAY_*): no new streams either way afterwards;
 * existing streams finish. Returns 0, DC_ESTATE when already sent, DC_ELIMIT on a full output.
 */
DC_MUST_CHECK int dc_yamux_go_away(struct dc_yamux *y, uint32_t code);

/* Streams currently open. */
size_t dc_yamux_stream_count(const struct dc_yamux *y);

/* True once the session can carry no more traffic: it failed, or Go Away went both ways and
 * every stream has ended. The host closes the connection after draining the output. */
bool dc_yamux_is_done(const struct dc_yamux *y);

/* ============================================================================================
 * 4. pnet (private networks, libp2p pnet spec)
 *
 * Both sides first send a random 24-byte nonce; after that every byte each way is XORed with
 * the XSalsa20 key stream of (PSK, the sender's nonce). The PSK file reads
 * "/key/swarm/psk/1.0.0/\n/base16/\n<64 hex digits>" (a trailing newline is allowed).
 * ========================================================================================== */

#define DC_PNET_KEY_LEN   32
#define DC_PNET_NONCE_LEN 24

/*
 * Parses a PSK file's contents text[0..len) into key[DC_PNET_KEY_LEN]. Returns 0, or
 * DC_ECORRUPT for a wrong header line, an encoding other than /base16/, or a key that is not
 * exactly 64 hex digits (DC_EUNSUPPORTED for /base64/ or /bin/).
 */
DC_MUST_CHECK int dc_pnet_psk_parse(const char *text, size_t len, uint8_t key[DC_PNET_KEY_LEN]);

struct dc_pnet {
    uint8_t key[DC_PNET_KEY_LEN];
    uint8_t local_nonce[DC_PNET_NONCE_LEN];
    uint8_t remote_nonce[DC_PNET_NONCE_LEN];
    size_t remote_nonce_len; /* bytes of the peer's nonce received so far */
    uint64_t tx_offset;      /* key-stream position, bytes, outbound */
    uint64_t rx_offset;      /* key-stream position, bytes, inbound */
};

/*
 * Initialises 'p' with the PSK and our nonce. 'local_nonce' NULL draws a random one (libsodium
 * randombytes); tests pass a fixed one. The host must send p->local_nonce first.
 */
void dc_pnet_init(struct dc_pnet *p, const uint8_t key[DC_PNET_KEY_LEN],
                  const uint8_t *local_nonce);

/* Wipes the key material. */
void dc_pnet_cleanup(struct dc_pnet *p);

/* Encrypts buf[0..len) in place for sending (after the nonce). */
void dc_pnet_encrypt(struct dc_pnet *p, uint8_t *buf, size_t len);

/*
 * Decrypts received bytes buf[0..len) in place. The first DC_PNET_NONCE_LEN bytes ever fed
 * are the peer's nonce and are taken, not decrypted: '*skip' (may be NULL only when the
 * caller knows the nonce is complete) tells how many leading bytes of buf were nonce; the
 * plaintext is buf[*skip..len).
 */
void dc_pnet_decrypt(struct dc_pnet *p, uint8_t *buf, size_t len, size_t *skip);

#endif
