/* SPDX-License-Identifier: MIT */
/*
 * gguf-gen.c - writes small random GGUF models for tests and benchmarks, so the project never
 * needs a downloaded model. The weights come from a seeded generator (same arguments, same
 * bytes), the vocabulary is a small working one generated for the architecture's tokenizer
 * family (SentencePiece for llama, byte-level BPE with ChatML tokens for qwen2, WordPiece for
 * bert) or the tokenizer.* metadata of a real file (--vocab-from). The model is written with
 * gguf.h as F32, streaming the tensor data so memory stays small, then converted to the
 * requested type with llama_model_quantize(). The result loads and generates in llama.cpp; the
 * text it produces is of course noise. --chat-template puts a real tokenizer.chat_template in,
 * for checking how chats render.
 *
 * Weights: matrices uniform with standard deviation 1/sqrt(fan_in) (so activations keep their
 * scale and the logits are not flat), norm weights 1, biases 0. Each tensor draws from its own
 * stream, seeded from --seed and the tensor's name.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ggml.h>
#include <gguf.h>
#include <llama.h>

#include "base/base.h"
#include "model/model.h"

#define MAX_LAYERS  512
#define MAX_TENSORS (16 * MAX_LAYERS + 8) /* bert: 16 per layer */
#define MAX_VOCAB   (1u << 20)
#define MAX_DIM     (1u << 16)
#define MAX_CTX     (1u << 20)
#define MAX_TMPL    (1u << 20) /* --chat-template bytes; real templates are a few KiB */

/* Token types as llama.cpp numbers them (llama_token_type). */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_BYTE = 6 };

enum arch { ARCH_LLAMA, ARCH_QWEN2, ARCH_BERT };
static const char *const arch_names[] = {"llama", "qwen2", "bert"};

struct opts {
    enum arch arch;
    bool have_arch;
    uint32_t dim, layers, heads, kv_heads, ff, vocab, ctx;
    uint64_t seed;
    bool have_seed;
    int threads;
    bool verbose;
    const char *type;
    const char *vocab_from;
    const char *chat_template_path;
    char *chat_template; /* the text of --chat-template, read by main() (heap) */
    const char *out;
};

/* Output types accepted by --type (case-insensitive) and the llama_ftype each maps to. */
static const struct {
    const char *name;
    enum llama_ftype ftype;
} types[] = {
    {"f32", LLAMA_FTYPE_ALL_F32},
    {"f16", LLAMA_FTYPE_MOSTLY_F16},
    {"bf16", LLAMA_FTYPE_MOSTLY_BF16},
    {"q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
    {"q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},
    {"q4_1", LLAMA_FTYPE_MOSTLY_Q4_1},
    {"q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},
    {"q5_1", LLAMA_FTYPE_MOSTLY_Q5_1},
    {"q2_k", LLAMA_FTYPE_MOSTLY_Q2_K},
    {"q2_k_s", LLAMA_FTYPE_MOSTLY_Q2_K_S},
    {"q3_k", LLAMA_FTYPE_MOSTLY_Q3_K_M},
    {"q3_k_s", LLAMA_FTYPE_MOSTLY_Q3_K_S},
    {"q3_k_m", LLAMA_FTYPE_MOSTLY_Q3_K_M},
    {"q3_k_l", LLAMA_FTYPE_MOSTLY_Q3_K_L},
    {"q4_k", LLAMA_FTYPE_MOSTLY_Q4_K_M},
    {"q4_k_s", LLAMA_FTYPE_MOSTLY_Q4_K_S},
    {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M},
    {"q5_k", LLAMA_FTYPE_MOSTLY_Q5_K_M},
    {"q5_k_s", LLAMA_FTYPE_MOSTLY_Q5_K_S},
    {"q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M},
    {"q6_k", LLAMA_FTYPE_MOSTLY_Q6_K},
    {"iq4_nl", LLAMA_FTYPE_MOSTLY_IQ4_NL},
    {"iq4_xs", LLAMA_FTYPE_MOSTLY_IQ4_XS},
    {"iq3_s", LLAMA_FTYPE_MOSTLY_IQ3_S},
    {"iq3_m", LLAMA_FTYPE_MOSTLY_IQ3_M},
    {"iq3_xs", LLAMA_FTYPE_MOSTLY_IQ3_XS},
    {"iq3_xxs", LLAMA_FTYPE_MOSTLY_IQ3_XXS},
    {"iq2_m", LLAMA_FTYPE_MOSTLY_IQ2_M},
    {"iq2_s", LLAMA_FTYPE_MOSTLY_IQ2_S},
    {"iq2_xs", LLAMA_FTYPE_MOSTLY_IQ2_XS},
    {"iq2_xxs", LLAMA_FTYPE_MOSTLY_IQ2_XXS},
    {"iq1_s", LLAMA_FTYPE_MOSTLY_IQ1_S},
    {"iq1_m", LLAMA_FTYPE_MOSTLY_IQ1_M},
    {"tq1_0", LLAMA_FTYPE_MOSTLY_TQ1_0},
    {"tq2_0", LLAMA_FTYPE_MOSTLY_TQ2_0},
    {"mxfp4_moe", LLAMA_FTYPE_MOSTLY_MXFP4_MOE},
};

static const char usage_text[] =
    "Usage: gguf-gen --arch llama|qwen2|bert --dim D --layers L --heads H --kv-heads K\n"
    "                [--ff F] [--vocab V] [--ctx C] --type T --seed S\n"
    "                [--vocab-from FILE.gguf] [--chat-template FILE] [--threads N] [-v]\n"
    "                -o OUT.gguf\n"
    "\n"
    "Writes a GGUF model with random weights drawn from the seed (same arguments, same file)\n"
    "and a small working vocabulary, loadable by llama.cpp.\n"
    "\n"
    "  --arch A          llama (SentencePiece vocab), qwen2 (byte-level BPE, ChatML tokens and\n"
    "                    template) or bert (WordPiece vocab, encoder with mean pooling)\n"
    "  --dim D          embedding width; a multiple of --heads, with an even head size\n"
    "  --layers L       transformer blocks (1..512)\n"
    "  --heads H        attention heads\n"
    "  --kv-heads K     key/value heads; H must be a multiple of K (bert: K = H)\n"
    "  --ff F           feed-forward width (default 4*D)\n"
    "  --vocab V        vocabulary size (default 512; minimum 260 llama, 259 qwen2, 64 bert)\n"
    "  --ctx C          training context length written to the file (default 512)\n"
    "  --type T         output type, case-insensitive: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1\n"
    "                    q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k iq4_nl\n"
    "                    iq4_xs iq3_s iq3_m tq1_0 tq2_0 ... (q3_k/q4_k/q5_k mean _m). Tensors\n"
    "                    whose rows do not fit the type's blocks fall back as llama.cpp does;\n"
    "                    iq1/iq2/iq3_xxs types need an importance matrix and are refused.\n"
    "  --seed S         64-bit seed for the weights\n"
    "  --vocab-from F   copy the tokenizer.* metadata of GGUF file F (sets V)\n"
    "  --chat-template F\n"
    "                   set tokenizer.chat_template to the text of file F (a Jinja chat\n"
    "                   template, at most 1 MiB); it replaces the template that qwen2's\n"
    "                   vocabulary or --vocab-from brings\n"
    "  --threads N      quantization threads (default: all cores)\n"
    "  -v, --verbose    show llama.cpp's log\n"
    "  -o, --output F   the file to write (replaced atomically)\n"
    "  -h, --help       this text\n";

static bool verbose;

static void log_cb(enum ggml_log_level level, const char *text, void *user)
{
    (void)user;
    if (verbose || level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

DC_PRINTF(1, 2) static int die(const char *fmt, ...)
{
    va_list ap;

    fputs("gguf-gen: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static int parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    if (*s == '-' || *s == '\0')
        goto bad;
    v = strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        goto bad;
    *out = v;
    return 0;
bad:
    die("%s: '%s' is not a number in %" PRIu64 "..%" PRIu64, opt, s, lo, hi);
    return -1;
}

static int parse_u32(const char *opt, const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    uint64_t v;

    if (parse_u64(opt, s, lo, hi, &v) < 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* ---- the random generator: splitmix64, one stream per tensor ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t stream_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a of the name, mixed with the seed */

    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    h ^= seed;
    return splitmix64(&h);
}

/* ---- the vocabulary ---- */

struct vocab {
    char **tokens;
    float *scores;
    int32_t *types;
    uint32_t n, cap;
    char **merges;
    uint32_t n_merges;
};

static int vocab_add(struct vocab *v, const char *text, float score, int32_t type)
{
    if (v->n == v->cap)
        return DC_ELIMIT;
    v->tokens[v->n] = dc_strdup(text);
    if (v->tokens[v->n] == NULL)
        return DC_ENOMEM;
    v->scores[v->n] = score;
    v->types[v->n] = type;
    v->n++;
    return 0;
}

static int vocab_merge(struct vocab *v, const char *left, const char *right)
{
    v->merges[v->n_merges] = dc_asprintf("%s %s", left, right);
    if (v->merges[v->n_merges] == NULL)
        return DC_ENOMEM;
    v->n_merges++;
    return 0;
}

static void vocab_free(struct vocab *v)
{
    for (uint32_t i = 0; i < v->n; i++)
        dc_free(v->tokens[i]);
    for (uint32_t i = 0; i < v->n_merges; i++)
        dc_free(v->merges[i]);
    dc_free(v->tokens);
    dc_free(v->scores);
    dc_free(v->types);
    dc_free(v->merges);
}

/* GPT-2's byte-to-unicode map: printable bytes stand for themselves, the rest for U+0100.. */
static void byte_token(uint8_t b, char out[4])
{
    static uint32_t map[256];
    static bool ready;
    uint32_t cp;

    if (!ready) {
        uint32_t n = 0;
        for (int i = 0; i < 256; i++) {
            bool keep = (i >= '!' && i <= '~') || (i >= 0xa1 && i <= 0xac) || i >= 0xae;
            map[i] = keep ? (uint32_t)i : 256 + n++;
        }
        ready = true;
    }
    cp = map[b];
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = '\0';
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = '\0';
    }
}

/*
 * Fills the vocabulary up to v->cap with word pieces over a frequency-ordered alphabet: first
 * single characters (with and without the word-start marker 'mark'), then every two-letter
 * string, then three, ... Each piece of BPE (bpe = true) also gets the merge that builds it
 * from its prefix and last letter; bare single characters are already byte tokens there.
 */
static int vocab_pieces(struct vocab *v, const char *mark, bool bpe)
{
    static const char letters[] = "etaoinshrdlcumwfgypbvkjxqz";
    static const char extra[] = "0123456789.,!?'-";
    char word[16], piece[24], prefix[24], last[2] = {0, 0};
    float score = -1.0f;
    int rc = 0;

    /* Level 1: single characters (extra punctuation and digits only outside BPE). */
    for (size_t i = 0; i < sizeof(letters) - 1 + (bpe ? 0 : sizeof(extra) - 1); i++) {
        char ch = i < sizeof(letters) - 1 ? letters[i] : extra[i - (sizeof(letters) - 1)];
        last[0] = ch;
        snprintf(piece, sizeof(piece), "%s%c", mark, ch);
        if (v->n == v->cap)
            return 0;
        rc = vocab_add(v, piece, score--, TT_NORMAL);
        if (rc == 0 && bpe)
            rc = vocab_merge(v, mark, last);
        if (rc == 0 && !bpe && v->n < v->cap)
            rc = vocab_add(v, last, score--, TT_NORMAL);
        if (rc < 0)
            return rc;
    }
    /* Level n >= 2: every word of n letters, as word start and as continuation. */
    for (size_t n = 2; n < sizeof(word); n++) {
        size_t count = 1;
        for (size_t k = 0; k < n; k++)
            count *= 26;
        for (size_t idx = 0; idx < count; idx++) {
            size_t x = idx;
            for (size_t k = n; k-- > 0;) {
                word[k] = letters[x % 26];
                x /= 26;
            }
            word[n] = '\0';
            last[0] = word[n - 1];
            for (int start = 1; start >= 0; start--) {
                if (v->n == v->cap)
                    return 0;
                snprintf(piece, sizeof(piece), "%s%s", start ? mark : "", word);
                rc = vocab_add(v, piece, score--, TT_NORMAL);
                if (rc == 0 && bpe) {
                    snprintf(prefix, sizeof(prefix), "%s%.*s", start ? mark : "", (int)(n - 1),
                             word);
                    rc = vocab_merge(v, prefix, last);
                }
                if (rc < 0)
                    return rc;
            }
        }
    }
    return 0;
}

static int vocab_build(struct vocab *v, enum arch arch, uint32_t n_vocab)
{
    char buf[16];
    int rc = 0;

    memset(v, 0, sizeof(*v));
    v->cap = n_vocab;
    v->tokens = dc_calloc(n_vocab, sizeof(*v->tokens));
    v->scores = dc_calloc(n_vocab, sizeof(*v->scores));
    v->types = dc_calloc(n_vocab, sizeof(*v->types));
    v->merges = dc_calloc(n_vocab, sizeof(*v->merges));
    if (!v->tokens || !v->scores || !v->types || !v->merges)
        return DC_ENOMEM;

    switch (arch) {
    case ARCH_LLAMA: /* SentencePiece: <unk> <s> </s>, byte fallback, "▁" word starts */
        rc = vocab_add(v, "<unk>", 0, TT_UNKNOWN);
        rc = rc ? rc : vocab_add(v, "<s>", 0, TT_CONTROL);
        rc = rc ? rc : vocab_add(v, "</s>", 0, TT_CONTROL);
        for (int b = 0; b < 256 && rc == 0; b++) {
            snprintf(buf, sizeof(buf), "<0x%02X>", b);
            rc = vocab_add(v, buf, 0, TT_BYTE);
        }
        rc = rc ? rc : vocab_add(v, "\xe2\x96\x81", 0, TT_NORMAL);
        rc = rc ? rc : vocab_pieces(v, "\xe2\x96\x81", false);
        break;
    case ARCH_QWEN2: /* byte-level BPE: 256 byte tokens, merges, ChatML specials at the end */
        v->cap -= 3;
        for (int b = 0; b < 256 && rc == 0; b++) {
            byte_token((uint8_t)b, buf);
            rc = vocab_add(v, buf, 0, TT_NORMAL);
        }
        rc = rc ? rc : vocab_pieces(v, "\xc4\xa0", true);
        v->cap += 3;
        rc = rc ? rc : vocab_add(v, "<|endoftext|>", 0, TT_CONTROL);
        rc = rc ? rc : vocab_add(v, "<|im_start|>", 0, TT_CONTROL);
        rc = rc ? rc : vocab_add(v, "<|im_end|>", 0, TT_CONTROL);
        break;
    case ARCH_BERT: /* WordPiece as llama.cpp stores it: "▁" marks word starts */
        rc = vocab_add(v, "[PAD]", 0, TT_CONTROL);
        rc = rc ? rc : vocab_add(v, "[UNK]", 0, TT_UNKNOWN);
        rc = rc ? rc : vocab_add(v, "[CLS]", 0, TT_CONTROL);
        rc = rc ? rc : vocab_add(v, "[SEP]", 0, TT_CONTROL);
        rc = rc ? rc : vocab_add(v, "[MASK]", 0, TT_CONTROL);
        rc = rc ? rc : vocab_pieces(v, "\xe2\x96\x81", false);
        break;
    }
    if (rc == 0 && v->n != n_vocab)
        rc = DC_ELIMIT;
    return rc;
}

static const char chatml_template[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

static void set_vocab(struct gguf_context *ctx, const struct vocab *v, enum arch arch)
{
    uint32_t n = v->n;

    gguf_set_arr_str(ctx, "tokenizer.ggml.tokens", (const char **)v->tokens, n);
    gguf_set_arr_data(ctx, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v->types, n);
    switch (arch) {
    case ARCH_LLAMA:
        gguf_set_val_str(ctx, "tokenizer.ggml.model", "llama");
        gguf_set_arr_data(ctx, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, v->scores, n);
        gguf_set_val_u32(ctx, "tokenizer.ggml.unknown_token_id", 0);
        gguf_set_val_u32(ctx, "tokenizer.ggml.bos_token_id", 1);
        gguf_set_val_u32(ctx, "tokenizer.ggml.eos_token_id", 2);
        gguf_set_val_bool(ctx, "tokenizer.ggml.add_bos_token", true);
        gguf_set_val_bool(ctx, "tokenizer.ggml.add_eos_token", false);
        gguf_set_val_bool(ctx, "tokenizer.ggml.add_space_prefix", true);
        break;
    case ARCH_QWEN2:
        gguf_set_val_str(ctx, "tokenizer.ggml.model", "gpt2");
        gguf_set_val_str(ctx, "tokenizer.ggml.pre", "qwen2");
        gguf_set_arr_str(ctx, "tokenizer.ggml.merges", (const char **)v->merges, v->n_merges);
        gguf_set_val_u32(ctx, "tokenizer.ggml.bos_token_id", n - 3);
        gguf_set_val_u32(ctx, "tokenizer.ggml.eos_token_id", n - 1);
        gguf_set_val_u32(ctx, "tokenizer.ggml.padding_token_id", n - 3);
        gguf_set_val_bool(ctx, "tokenizer.ggml.add_bos_token", false);
        gguf_set_val_str(ctx, "tokenizer.chat_template", chatml_template);
        break;
    case ARCH_BERT:
        gguf_set_val_str(ctx, "tokenizer.ggml.model", "bert");
        gguf_set_val_u32(ctx, "tokenizer.ggml.padding_token_id", 0);
        gguf_set_val_u32(ctx, "tokenizer.ggml.unknown_token_id", 1);
        gguf_set_val_u32(ctx, "tokenizer.ggml.bos_token_id", 2);
        gguf_set_val_u32(ctx, "tokenizer.ggml.cls_token_id", 2);
        gguf_set_val_u32(ctx, "tokenizer.ggml.seperator_token_id", 3);
        gguf_set_val_u32(ctx, "tokenizer.ggml.mask_token_id", 4);
        gguf_set_val_u32(ctx, "tokenizer.ggml.token_type_count", 2);
        break;
    }
}

/*
 * Copies every tokenizer.* entry of 'path' into 'ctx' and returns the vocabulary size in
 * '*n_vocab'. The file is validated by our own reader first, so gguf.h only sees sane input.
 */
static int copy_vocab(struct gguf_context *ctx, const char *path, uint32_t *n_vocab)
{
    struct gguf_init_params ip = {.no_alloc = true, .ctx = NULL};
    struct dc_gguf *g;
    struct gguf_context *src;
    const struct dc_gguf_kv *kv;
    int rc;

    rc = dc_gguf_open(path, &g);
    if (rc < 0)
        return die("--vocab-from %s: %s%s%s", path, dc_strerror(rc), *dc_gguf_error() ? ": " : "",
                   dc_gguf_error());
    kv = dc_gguf_find(g, "tokenizer.ggml.tokens");
    if (kv == NULL || kv->type != DC_GGUF_ARRAY || kv->elem_type != DC_GGUF_STRING ||
        kv->n_elems == 0 || kv->n_elems > MAX_VOCAB) {
        dc_gguf_close(g);
        return die("--vocab-from %s: no usable tokenizer.ggml.tokens array", path);
    }
    *n_vocab = (uint32_t)kv->n_elems;
    dc_gguf_close(g);

    src = gguf_init_from_file(path, ip);
    if (src == NULL)
        return die("--vocab-from %s: llama.cpp's gguf reader refused the file", path);
    for (int64_t i = 0; i < gguf_get_n_kv(src); i++) {
        const char *key = gguf_get_key(src, i);
        enum gguf_type t = gguf_get_kv_type(src, i);
        if (strncmp(key, "tokenizer.", 10) != 0)
            continue;
        if (t == GGUF_TYPE_ARRAY) {
            enum gguf_type at = gguf_get_arr_type(src, i);
            size_t n = gguf_get_arr_n(src, i);
            if (at == GGUF_TYPE_STRING) {
                const char **strs = dc_calloc(n ? n : 1, sizeof(*strs));
                if (strs == NULL) {
                    gguf_free(src);
                    return die("out of memory");
                }
                for (size_t j = 0; j < n; j++)
                    strs[j] = gguf_get_arr_str(src, i, j);
                gguf_set_arr_str(ctx, key, strs, n);
                dc_free(strs);
            } else if (at != GGUF_TYPE_ARRAY) {
                gguf_set_arr_data(ctx, key, at, gguf_get_arr_data(src, i), n);
            }
            continue;
        }
        switch (t) {
        case GGUF_TYPE_STRING:
            gguf_set_val_str(ctx, key, gguf_get_val_str(src, i));
            break;
        case GGUF_TYPE_BOOL:
            gguf_set_val_bool(ctx, key, gguf_get_val_bool(src, i));
            break;
        case GGUF_TYPE_UINT8:
            gguf_set_val_u8(ctx, key, gguf_get_val_u8(src, i));
            break;
        case GGUF_TYPE_INT8:
            gguf_set_val_i8(ctx, key, gguf_get_val_i8(src, i));
            break;
        case GGUF_TYPE_UINT16:
            gguf_set_val_u16(ctx, key, gguf_get_val_u16(src, i));
            break;
        case GGUF_TYPE_INT16:
            gguf_set_val_i16(ctx, key, gguf_get_val_i16(src, i));
            break;
        case GGUF_TYPE_UINT32:
            gguf_set_val_u32(ctx, key, gguf_get_val_u32(src, i));
            break;
        case GGUF_TYPE_INT32:
            gguf_set_val_i32(ctx, key, gguf_get_val_i32(src, i));
            break;
        case GGUF_TYPE_FLOAT32:
            gguf_set_val_f32(ctx, key, gguf_get_val_f32(src, i));
            break;
        case GGUF_TYPE_UINT64:
            gguf_set_val_u64(ctx, key, gguf_get_val_u64(src, i));
            break;
        case GGUF_TYPE_INT64:
            gguf_set_val_i64(ctx, key, gguf_get_val_i64(src, i));
            break;
        case GGUF_TYPE_FLOAT64:
            gguf_set_val_f64(ctx, key, gguf_get_val_f64(src, i));
            break;
        default:
            break;
        }
    }
    gguf_free(src);
    return 0;
}

/* ---- tensors ---- */

enum init { INIT_WEIGHT, INIT_ONES, INIT_ZEROS };

struct tspec {
    char name[GGML_MAX_NAME];
    int64_t ne0, ne1; /* ne1 = 0: a vector */
    enum init init;
};

struct tlist {
    struct tspec t[MAX_TENSORS];
    int n;
};

static void tadd(struct tlist *l, const char *name, int64_t ne0, int64_t ne1, enum init init)
{
    struct tspec *t = &l->t[l->n++];

    snprintf(t->name, sizeof(t->name), "%s", name);
    t->ne0 = ne0;
    t->ne1 = ne1;
    t->init = init;
}

/* Per-layer tensors use "blk.<i>.<suffix>" names. */
static void ladd(struct tlist *l, uint32_t i, const char *suffix, int64_t ne0, int64_t ne1,
                 enum init init)
{
    char name[GGML_MAX_NAME];

    snprintf(name, sizeof(name), "blk.%u.%s", i, suffix);
    tadd(l, name, ne0, ne1, init);
}

/* The tensor set of each architecture, with llama.cpp's names and shapes (ne0 = input). */
static void build_tensors(struct tlist *l, const struct opts *o)
{
    int64_t d = o->dim, ff = o->ff, v = o->vocab;
    int64_t d_kv = (int64_t)o->dim / o->heads * o->kv_heads;

    l->n = 0;
    tadd(l, "token_embd.weight", d, v, INIT_WEIGHT);
    if (o->arch == ARCH_BERT) {
        tadd(l, "token_types.weight", d, 2, INIT_WEIGHT);
        tadd(l, "position_embd.weight", d, o->ctx, INIT_WEIGHT);
        tadd(l, "token_embd_norm.weight", d, 0, INIT_ONES);
        tadd(l, "token_embd_norm.bias", d, 0, INIT_ZEROS);
        for (uint32_t i = 0; i < o->layers; i++) {
            ladd(l, i, "attn_q.weight", d, d, INIT_WEIGHT);
            ladd(l, i, "attn_q.bias", d, 0, INIT_ZEROS);
            ladd(l, i, "attn_k.weight", d, d, INIT_WEIGHT);
            ladd(l, i, "attn_k.bias", d, 0, INIT_ZEROS);
            ladd(l, i, "attn_v.weight", d, d, INIT_WEIGHT);
            ladd(l, i, "attn_v.bias", d, 0, INIT_ZEROS);
            ladd(l, i, "attn_output.weight", d, d, INIT_WEIGHT);
            ladd(l, i, "attn_output.bias", d, 0, INIT_ZEROS);
            ladd(l, i, "attn_output_norm.weight", d, 0, INIT_ONES);
            ladd(l, i, "attn_output_norm.bias", d, 0, INIT_ZEROS);
            ladd(l, i, "ffn_up.weight", d, ff, INIT_WEIGHT);
            ladd(l, i, "ffn_up.bias", ff, 0, INIT_ZEROS);
            ladd(l, i, "ffn_down.weight", ff, d, INIT_WEIGHT);
            ladd(l, i, "ffn_down.bias", d, 0, INIT_ZEROS);
            ladd(l, i, "layer_output_norm.weight", d, 0, INIT_ONES);
            ladd(l, i, "layer_output_norm.bias", d, 0, INIT_ZEROS);
        }
        return;
    }
    tadd(l, "output_norm.weight", d, 0, INIT_ONES);
    tadd(l, "output.weight", d, v, INIT_WEIGHT);
    for (uint32_t i = 0; i < o->layers; i++) {
        ladd(l, i, "attn_norm.weight", d, 0, INIT_ONES);
        ladd(l, i, "attn_q.weight", d, d, INIT_WEIGHT);
        ladd(l, i, "attn_k.weight", d, d_kv, INIT_WEIGHT);
        ladd(l, i, "attn_v.weight", d, d_kv, INIT_WEIGHT);
        if (o->arch == ARCH_QWEN2) {
            ladd(l, i, "attn_q.bias", d, 0, INIT_ZEROS);
            ladd(l, i, "attn_k.bias", d_kv, 0, INIT_ZEROS);
            ladd(l, i, "attn_v.bias", d_kv, 0, INIT_ZEROS);
        }
        ladd(l, i, "attn_output.weight", d, d, INIT_WEIGHT);
        ladd(l, i, "ffn_norm.weight", d, 0, INIT_ONES);
        ladd(l, i, "ffn_gate.weight", d, ff, INIT_WEIGHT);
        ladd(l, i, "ffn_up.weight", d, ff, INIT_WEIGHT);
        ladd(l, i, "ffn_down.weight", ff, d, INIT_WEIGHT);
    }
}

static void set_hparams(struct gguf_context *ctx, const struct opts *o)
{
    const char *a = arch_names[o->arch];
    char key[96], name[96];

#define KEY(suffix) (snprintf(key, sizeof(key), "%s." suffix, a), key)
    snprintf(name, sizeof(name), "gguf-gen %s d%u l%u h%u/%u seed %" PRIu64, a, o->dim, o->layers,
             o->heads, o->kv_heads, o->seed);
    gguf_set_val_str(ctx, "general.architecture", a);
    gguf_set_val_str(ctx, "general.name", name);
    gguf_set_val_u32(ctx, "general.file_type", LLAMA_FTYPE_ALL_F32);
    gguf_set_val_u32(ctx, "general.quantization_version", GGML_QNT_VERSION);
    gguf_set_val_u32(ctx, KEY("context_length"), o->ctx);
    gguf_set_val_u32(ctx, KEY("embedding_length"), o->dim);
    gguf_set_val_u32(ctx, KEY("block_count"), o->layers);
    gguf_set_val_u32(ctx, KEY("feed_forward_length"), o->ff);
    gguf_set_val_u32(ctx, KEY("attention.head_count"), o->heads);
    gguf_set_val_u32(ctx, KEY("attention.head_count_kv"), o->kv_heads);
    gguf_set_val_u32(ctx, KEY("vocab_size"), o->vocab);
    if (o->arch == ARCH_BERT) {
        gguf_set_val_f32(ctx, KEY("attention.layer_norm_epsilon"), 1e-12f);
        gguf_set_val_bool(ctx, KEY("attention.causal"), false);
        gguf_set_val_u32(ctx, KEY("pooling_type"), 1); /* mean */
    } else {
        gguf_set_val_f32(ctx, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
        gguf_set_val_u32(ctx, KEY("rope.dimension_count"), o->dim / o->heads);
        gguf_set_val_f32(ctx, KEY("rope.freq_base"), o->arch == ARCH_QWEN2 ? 1e6f : 1e4f);
    }
#undef KEY
}

/* Streams one tensor's F32 data to 'f', padded to 'align'. */
static int write_tensor(FILE *f, const struct tspec *t, uint64_t seed, size_t align, float *buf,
                        size_t buf_len)
{
    uint64_t n = (uint64_t)t->ne0 * (uint64_t)(t->ne1 ? t->ne1 : 1), done = 0;
    uint64_t s = stream_seed(seed, t->name);
    /* uniform on [-a, a) has standard deviation a/sqrt(3) */
    float a = sqrtf(3.0f / (float)t->ne0);
    static const uint8_t zeros[64];
    size_t pad;

    while (done < n) {
        size_t k = n - done < buf_len ? (size_t)(n - done) : buf_len;
        for (size_t i = 0; i < k; i++) {
            switch (t->init) {
            case INIT_WEIGHT:
                buf[i] = ((float)(splitmix64(&s) >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * a;
                break;
            case INIT_ONES:
                buf[i] = 1.0f;
                break;
            case INIT_ZEROS:
                buf[i] = 0.0f;
                break;
            }
        }
        if (fwrite(buf, sizeof(float), k, f) != k)
            return -1;
        done += k;
    }
    pad = (align - (size_t)(n * sizeof(float)) % align) % align;
    while (pad > 0) {
        size_t k = pad < sizeof(zeros) ? pad : sizeof(zeros);
        if (fwrite(zeros, 1, k, f) != k)
            return -1;
        pad -= k;
    }
    return 0;
}

/* Writes the F32 model to 'path'. Returns 0 or 1 (message printed). */
static int write_f32(const struct opts *o, const char *path)
{
    struct ggml_init_params gp;
    struct ggml_context *gctx = NULL;
    struct gguf_context *ctx = NULL;
    struct tlist *tl = NULL;
    struct vocab v;
    float *buf = NULL;
    FILE *f = NULL;
    int ret = 1, rc;
    uint32_t n_vocab = o->vocab;
    struct opts oo = *o;

    memset(&v, 0, sizeof(v));
    ctx = gguf_init_empty();
    tl = dc_calloc(1, sizeof(*tl));
    buf = dc_malloc(65536 * sizeof(float));
    if (ctx == NULL || tl == NULL || buf == NULL) {
        die("out of memory");
        goto out;
    }
    if (o->vocab_from != NULL) {
        if (copy_vocab(ctx, o->vocab_from, &n_vocab) != 0)
            goto out;
        if (o->vocab != 0 && o->vocab != n_vocab) {
            die("--vocab %u conflicts with the %u tokens of %s", o->vocab, n_vocab, o->vocab_from);
            goto out;
        }
        if (o->arch == ARCH_BERT && gguf_find_key(ctx, "tokenizer.ggml.token_type_count") < 0)
            gguf_set_val_u32(ctx, "tokenizer.ggml.token_type_count", 2);
    } else {
        rc = vocab_build(&v, o->arch, n_vocab);
        if (rc < 0) {
            die("cannot build a %u-token vocabulary: %s", n_vocab, dc_strerror(rc));
            goto out;
        }
        set_vocab(ctx, &v, o->arch);
    }
    /* After the vocabulary, so it replaces a template that came with it. */
    if (o->chat_template != NULL)
        gguf_set_val_str(ctx, "tokenizer.chat_template", o->chat_template);
    oo.vocab = n_vocab;
    set_hparams(ctx, &oo);

    build_tensors(tl, &oo);
    gp = (struct ggml_init_params){(size_t)tl->n * ggml_tensor_overhead(), NULL, true};
    gctx = ggml_init(gp);
    if (gctx == NULL) {
        die("out of memory");
        goto out;
    }
    for (int i = 0; i < tl->n; i++) {
        struct tspec *t = &tl->t[i];
        struct ggml_tensor *x = t->ne1 ? ggml_new_tensor_2d(gctx, GGML_TYPE_F32, t->ne0, t->ne1)
                                       : ggml_new_tensor_1d(gctx, GGML_TYPE_F32, t->ne0);
        ggml_set_name(x, t->name);
        gguf_add_tensor(ctx, x);
    }
    if (!gguf_write_to_file(ctx, path, true)) {
        die("cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    f = fopen(path, "ab");
    if (f == NULL) {
        die("cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    for (int i = 0; i < tl->n; i++) {
        if (write_tensor(f, &tl->t[i], o->seed, gguf_get_alignment(ctx), buf, 65536) < 0) {
            die("cannot write %s: %s", path, strerror(errno));
            goto out;
        }
    }
    if (fclose(f) != 0) {
        f = NULL;
        die("cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    f = NULL;
    ret = 0;
out:
    if (f != NULL)
        fclose(f);
    if (gctx != NULL)
        ggml_free(gctx);
    if (ctx != NULL)
        gguf_free(ctx);
    vocab_free(&v);
    dc_free(tl);
    dc_free(buf);
    return ret;
}

/*
 * Reads the --chat-template file into a heap string '*out'. The text goes into the file as a
 * GGUF string through a C string, so an embedded NUL (which would cut it short silently) is
 * refused, as is a file over MAX_TMPL.
 */
static int read_template(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n;

    *out = NULL;
    if (f == NULL)
        return die("--chat-template %s: %s", path, strerror(errno));
    buf = dc_malloc(MAX_TMPL + 1);
    if (buf == NULL) {
        fclose(f);
        return die("out of memory");
    }
    n = fread(buf, 1, MAX_TMPL + 1, f);
    if (ferror(f)) {
        die("--chat-template %s: %s", path, strerror(errno));
        goto err_free;
    }
    if (n > MAX_TMPL) {
        die("--chat-template %s: larger than %u bytes", path, MAX_TMPL);
        goto err_free;
    }
    if (n == 0 || memchr(buf, '\0', n) != NULL) {
        die("--chat-template %s: %s", path, n == 0 ? "empty file" : "contains a NUL byte");
        goto err_free;
    }
    buf[n] = '\0';
    fclose(f);
    *out = buf;
    return 0;

err_free:
    fclose(f);
    dc_free(buf);
    return 1;
}

static int check_opts(struct opts *o)
{
    uint32_t min_vocab = o->arch == ARCH_LLAMA ? 260 : o->arch == ARCH_QWEN2 ? 259 : 64;

    if (!o->have_arch || !o->dim || !o->layers || !o->heads || !o->kv_heads || !o->type ||
        !o->have_seed || !o->out)
        return die("--arch, --dim, --layers, --heads, --kv-heads, --type, --seed and -o are "
                   "required (see --help)");
    if (o->dim % o->heads != 0)
        return die("--dim %u is not a multiple of --heads %u", o->dim, o->heads);
    if (o->arch != ARCH_BERT && (o->dim / o->heads) % 2 != 0)
        return die("head size %u (dim/heads) must be even for RoPE", o->dim / o->heads);
    if (o->heads % o->kv_heads != 0)
        return die("--heads %u is not a multiple of --kv-heads %u", o->heads, o->kv_heads);
    if (o->arch == ARCH_BERT && o->kv_heads != o->heads)
        return die("bert has no grouped-query attention: --kv-heads must equal --heads");
    if (o->ff == 0)
        o->ff = 4 * o->dim;
    if (o->ctx == 0)
        o->ctx = 512;
    if (o->vocab_from == NULL && o->vocab == 0)
        o->vocab = 512;
    if (o->vocab_from == NULL && o->vocab < min_vocab)
        return die("--vocab %u is too small for %s's tokenizer (at least %u)", o->vocab,
                   arch_names[o->arch], min_vocab);
    return 0;
}

static int find_type(const char *name, enum llama_ftype *ftype)
{
    for (size_t i = 0; i < DC_ARRAY_LEN(types); i++) {
        if (strcasecmp(name, types[i].name) == 0) {
            *ftype = types[i].ftype;
            return 0;
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"arch", required_argument, NULL, 'a'},
        {"dim", required_argument, NULL, 'd'},
        {"layers", required_argument, NULL, 'l'},
        {"heads", required_argument, NULL, 'H'},
        {"kv-heads", required_argument, NULL, 'k'},
        {"ff", required_argument, NULL, 'f'},
        {"vocab", required_argument, NULL, 'V'},
        {"ctx", required_argument, NULL, 'c'},
        {"type", required_argument, NULL, 't'},
        {"seed", required_argument, NULL, 's'},
        {"vocab-from", required_argument, NULL, 'F'},
        {"chat-template", required_argument, NULL, 'T'},
        {"threads", required_argument, NULL, 'j'},
        {"output", required_argument, NULL, 'o'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct opts o;
    enum llama_ftype ftype = LLAMA_FTYPE_ALL_F32;
    char *tmp_f32 = NULL, *tmp_out = NULL;
    struct dc_gguf *g = NULL;
    uint32_t threads = 0;
    int c, rc, ret = 1;

    memset(&o, 0, sizeof(o));
    while ((c = getopt_long(argc, argv, "o:vh", long_opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            o.have_arch = true;
            if (strcmp(optarg, "llama") == 0)
                o.arch = ARCH_LLAMA;
            else if (strcmp(optarg, "qwen2") == 0)
                o.arch = ARCH_QWEN2;
            else if (strcmp(optarg, "bert") == 0)
                o.arch = ARCH_BERT;
            else
                return die("--arch: '%s' is not llama, qwen2 or bert", optarg);
            break;
        case 'd':
            if (parse_u32("--dim", optarg, 1, MAX_DIM, &o.dim) < 0)
                return 2;
            break;
        case 'l':
            if (parse_u32("--layers", optarg, 1, MAX_LAYERS, &o.layers) < 0)
                return 2;
            break;
        case 'H':
            if (parse_u32("--heads", optarg, 1, MAX_DIM, &o.heads) < 0)
                return 2;
            break;
        case 'k':
            if (parse_u32("--kv-heads", optarg, 1, MAX_DIM, &o.kv_heads) < 0)
                return 2;
            break;
        case 'f':
            if (parse_u32("--ff", optarg, 1, 4 * MAX_DIM, &o.ff) < 0)
                return 2;
            break;
        case 'V':
            if (parse_u32("--vocab", optarg, 1, MAX_VOCAB, &o.vocab) < 0)
                return 2;
            break;
        case 'c':
            if (parse_u32("--ctx", optarg, 1, MAX_CTX, &o.ctx) < 0)
                return 2;
            break;
        case 't':
            o.type = optarg;
            if (find_type(optarg, &ftype) < 0)
                return die("--type: '%s' is not a type llama.cpp quantizes to (see --help)",
                           optarg);
            break;
        case 's':
            if (parse_u64("--seed", optarg, 0, UINT64_MAX, &o.seed) < 0)
                return 2;
            o.have_seed = true;
            break;
        case 'F':
            o.vocab_from = optarg;
            break;
        case 'T':
            o.chat_template_path = optarg;
            break;
        case 'j':
            if (parse_u32("--threads", optarg, 1, 1024, &threads) < 0)
                return 2;
            break;
        case 'o':
            o.out = optarg;
            break;
        case 'v':
            o.verbose = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs(usage_text, stderr);
            return 2;
        }
    }
    if (optind < argc)
        return die("unexpected argument '%s' (see --help)", argv[optind]);
    if (check_opts(&o) != 0)
        return 2;
    if (o.chat_template_path != NULL && read_template(o.chat_template_path, &o.chat_template) != 0)
        return 1;

    verbose = o.verbose;
    llama_log_set(log_cb, NULL);
    llama_backend_init();

    /* Write next to the output and rename at the end, so OUT is never half-written. */
    tmp_f32 = dc_asprintf("%s.f32.tmp", o.out);
    tmp_out = dc_asprintf("%s.tmp", o.out);
    if (tmp_f32 == NULL || tmp_out == NULL) {
        die("out of memory");
        goto out;
    }
    if (write_f32(&o, tmp_f32) != 0)
        goto out;
    if (ftype == LLAMA_FTYPE_ALL_F32) {
        if (rename(tmp_f32, tmp_out) != 0) {
            die("cannot rename %s: %s", tmp_f32, strerror(errno));
            goto out;
        }
    } else {
        struct llama_model_quantize_params qp = llama_model_quantize_default_params();
        qp.ftype = ftype;
        qp.nthread = (int32_t)threads;
        if (llama_model_quantize(tmp_f32, tmp_out, &qp) != 0) {
            die("llama_model_quantize to %s failed (see the error above)", o.type);
            goto out;
        }
    }

    /* Check what we wrote with our own validator before it takes the final name. */
    rc = dc_gguf_open(tmp_out, &g);
    if (rc < 0) {
        die("the written file does not validate: %s: %s", dc_strerror(rc), dc_gguf_error());
        goto out;
    }
    if (rename(tmp_out, o.out) != 0) {
        die("cannot rename %s to %s: %s", tmp_out, o.out, strerror(errno));
        goto out;
    }
    fprintf(stderr, "gguf-gen: %s: %s, %" PRIu64 " parameters, %s, %" PRIu64 " bytes\n", o.out,
            dc_gguf_architecture(g), dc_gguf_param_count(g), dc_gguf_quantization(g),
            dc_gguf_file_size(g));
    ret = 0;
out:
    dc_gguf_close(g);
    if (tmp_f32 != NULL)
        unlink(tmp_f32);
    if (tmp_out != NULL)
        unlink(tmp_out);
    dc_free(tmp_f32);
    dc_free(tmp_out);
    dc_free(o.chat_template);
    llama_backend_free();
    return ret;
}
