/* wordfreq: a faasd function that does real work. POST a text, get its most frequent
 * words as JSON:
 *
 *   curl --data-binary @book.txt "http://$(faas ip wordfreq)/?top=3"
 *   {"words":1043,"unique":412,"top":[{"word":"the","count":61},{"word":"and",...},...]}
 *
 * A word is a run of letters and digits: ASCII ones, lower-cased, and any non-ASCII
 * character in valid UTF-8 except controls, punctuation and spaces (U+0080-U+00BF,
 * U+2000-U+206F, U+3000-U+303F, U+FEFF), kept as they are. An apostrophe (' or U+2019) between two
 * word characters belongs to the word, as '. Ties are broken alphabetically (by bytes).
 *
 *   ?top=N   how many words to list, 1 to 1000 (default 10)
 *   GET      answers a usage text; other methods than GET and POST get 405
 * Bodies up to 8 MiB (413 beyond, from the SDK).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faas.h"

#define MAX_BODY ((size_t)8 << 20)
#define DEFAULT_TOP 10
#define MAX_TOP 1000

static const char kUsage[] =
    "POST a text to get its most frequent words as JSON; ?top=N lists N of them "
    "(1-1000, default 10).\n";

struct word {
  const char *text; /* in the normalized copy of the body; not NUL-terminated */
  size_t len;
  size_t count;
};

struct table {
  struct word *slots;
  size_t cap; /* a power of two */
  size_t used;
};

static uint64_t hash(const char *s, size_t len) {
  uint64_t h = 1469598103934665603u; /* FNV-1a */
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211u;
  return h;
}

static int grow(struct table *t) {
  size_t cap = t->cap ? t->cap * 2 : 1024;
  struct word *slots = calloc(cap, sizeof *slots);
  if (slots == NULL) return -1;
  for (size_t i = 0; i < t->cap; i++) {
    if (t->slots[i].text == NULL) continue;
    size_t j = hash(t->slots[i].text, t->slots[i].len) & (cap - 1);
    while (slots[j].text != NULL) j = (j + 1) & (cap - 1);
    slots[j] = t->slots[i];
  }
  free(t->slots);
  t->slots = slots;
  t->cap = cap;
  return 0;
}

static int add(struct table *t, const char *text, size_t len) {
  if ((t->used + 1) * 2 > t->cap && grow(t) != 0) return -1;
  size_t i = hash(text, len) & (t->cap - 1);
  while (t->slots[i].text != NULL) {
    if (t->slots[i].len == len && memcmp(t->slots[i].text, text, len) == 0) {
      t->slots[i].count++;
      return 0;
    }
    i = (i + 1) & (t->cap - 1);
  }
  t->slots[i] = (struct word){text, len, 1};
  t->used++;
  return 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes left) and its code point; 0 if invalid. */
static size_t utf8(const unsigned char *s, size_t n, uint32_t *cp) {
  if (s[0] < 0x80) {
    *cp = s[0];
    return 1;
  }
  size_t len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 ? 2 : 0;
  if (len == 0 || len > n || s[0] > 0xF4) return 0;
  uint32_t c = s[0] & (0x7F >> len);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    c = (c << 6) | (s[i] & 0x3F);
  }
  static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (c < kMin[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  *cp = c;
  return len;
}

enum kind { kSeparator, kLetter, kApostrophe };

static enum kind classify(uint32_t c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return kLetter;
  if (c == '\'' || c == 0x2019) return kApostrophe;
  if (c <= 0xBF || (c >= 0x2000 && c <= 0x206F) || (c >= 0x3000 && c <= 0x303F) || c == 0xFEFF) {
    return kSeparator;
  }
  return kLetter;
}

/* Splits text into words, normalizing them into out (at least len bytes: normalizing
 * never lengthens), and counts them. Returns the number of words, or -1 out of memory. */
static long count_words(const char *text, size_t len, char *out, struct table *t) {
  const unsigned char *s = (const unsigned char *)text;
  long words = 0;
  size_t o = 0;
  size_t start = 0; /* where the current word starts in out */
  int in_word = 0;
  size_t pending = 0; /* an apostrophe seen after a letter: kept if a letter follows */
  for (size_t i = 0; i < len;) {
    uint32_t c;
    size_t n = utf8(s + i, len - i, &c);
    enum kind k = n == 0 ? kSeparator : classify(c);
    if (n == 0) n = 1;
    if (k == kLetter) {
      if (!in_word) {
        in_word = 1;
        start = o;
      }
      if (pending) {
        out[o++] = '\'';
        pending = 0;
      }
      if (c < 0x80) {
        out[o++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
      } else {
        memcpy(out + o, s + i, n);
        o += n;
      }
    } else if (k == kApostrophe && in_word && !pending) {
      pending = 1;
    } else if (in_word) {
      if (add(t, out + start, o - start) != 0) return -1;
      words++;
      in_word = 0;
      pending = 0;
    }
    i += n;
  }
  if (in_word) {
    if (add(t, out + start, o - start) != 0) return -1;
    words++;
  }
  return words;
}

static int by_count_then_word(const void *a, const void *b) {
  const struct word *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->text, y->text, n);
  if (c != 0) return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

static int parse_top(const struct faas_request *req, long *top) {
  char buf[16];
  ssize_t got = faas_query_param(req, "top", buf, sizeof buf);
  if (got == -1) {
    *top = DEFAULT_TOP;
    return 0;
  }
  char *end;
  long v = got > 0 ? strtol(buf, &end, 10) : 0;
  if (got <= 0 || *end != '\0' || v < 1 || v > MAX_TOP) return -1;
  *top = v;
  return 0;
}

static int answer_json(int client, long words, struct table *t, long top) {
  size_t n = 0;
  for (size_t i = 0; i < t->cap; i++) {
    if (t->slots[i].text != NULL) t->slots[n++] = t->slots[i];
  }
  qsort(t->slots, n, sizeof *t->slots, by_count_then_word);
  if ((size_t)top > n) top = (long)n;
  size_t cap = 64;
  for (long i = 0; i < top; i++) cap += t->slots[i].len + 48;
  char *json = malloc(cap);
  if (json == NULL) return faas_respond_error(client, 500, "out of memory") == 0 ? 0 : 1;
  size_t o = (size_t)snprintf(json, cap, "{\"words\":%ld,\"unique\":%zu,\"top\":[", words, n);
  for (long i = 0; i < top; i++) {
    /* Words hold no '"', '\\' or control characters: nothing to escape. */
    o += (size_t)snprintf(json + o, cap - o, "%s{\"word\":\"%.*s\",\"count\":%zu}", i ? "," : "",
                          (int)t->slots[i].len, t->slots[i].text, t->slots[i].count);
  }
  o += (size_t)snprintf(json + o, cap - o, "]}\n");
  int rc = faas_respond(client, 200, "application/json", json, o);
  free(json);
  return rc == 0 ? 0 : 1;
}

static int wordfreq(int client, const struct faas_request *req, void *ctx) {
  (void)ctx;
  if (strcmp(req->method, "GET") == 0) {
    int rc = faas_respond(client, 200, "text/plain; charset=utf-8", kUsage, sizeof kUsage - 1);
    return rc == 0 ? 0 : 1;
  }
  if (strcmp(req->method, "POST") != 0) {
    struct faas_header allow[] = {{"Allow", "GET, POST"},
                                  {"Content-Type", "text/plain; charset=utf-8"}};
    static const char kMsg[] = "use POST with a text body\n";
    return faas_respond_headers(client, 405, allow, 2, kMsg, sizeof kMsg - 1) == 0 ? 0 : 1;
  }
  long top;
  if (parse_top(req, &top) != 0) {
    return faas_respond_error(client, 400, "top must be a number from 1 to 1000") == 0 ? 0 : 1;
  }
  char *normalized = malloc(req->body_len + 1);
  struct table t = {0};
  long words = normalized != NULL ? count_words(req->body, req->body_len, normalized, &t) : -1;
  int rc = words < 0 ? (faas_respond_error(client, 500, "out of memory") == 0 ? 0 : 1)
                     : answer_json(client, words, &t, top);
  free(t.slots);
  free(normalized);
  return rc;
}

int main(void) {
  struct faas_limits limits = {.max_body = MAX_BODY};
  return faas_serve(wordfreq, &limits, NULL);
}
