/*
 * weir-bench's rte_acl anchor: DPDK's packet classifier deciding both directions of a
 * policy in one call, on rules that weir-bench writes, with every answer written out so
 * that weir-bench can check it against weir's.
 *
 * dpdk-test-acl cannot do this: it puts every rule in every category (one first match over
 * egress and ingress together) and prints no answers. Here each rule carries its category
 * (1: the source's egress, 2: the destination's ingress) and its own priority, so one
 * rte_acl_classify call returns the deciding rule of each direction.
 *
 * Usage: weir-acl [EAL options] -- --rulesf=F --tracef=F --rulenum=N --tracenum=N
 *        --iter=N --alg=NAME [--resultf=F]
 *   rules: "category priority userdata src srclen dst dstlen splo sphi dplo dphi proto mask"
 *          per line, numbers, addresses host-order integers;
 *   trace: "src dst sport dport proto" per line, host-order integers;
 *   result: per trace line "egress ingress", the userdata of each category's match (0: none).
 * Prints "build_ms B", "memory_bytes M" and "search_ip5tuples: ... X pkt/sec"; on an
 * algorithm this CPU or build cannot run, "failed to setup NAME method" and exit 2.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_acl.h>
#include <rte_byteorder.h>
#include <rte_eal.h>

/* The classified bytes: protocol first (rte_acl wants a one-byte first field), then each
 * 4-byte input group: source, destination, both ports. Network byte order. */
struct tuple {
	uint8_t proto;
	uint8_t pad[3];
	uint32_t src;
	uint32_t dst;
	uint16_t sport;
	uint16_t dport;
};

enum { F_PROTO, F_SRC, F_DST, F_SPORT, F_DPORT, F_NUM };

static struct rte_acl_field_def defs[F_NUM] = {
	{ .type = RTE_ACL_FIELD_TYPE_BITMASK, .size = 1, .field_index = F_PROTO,
	  .input_index = 0, .offset = offsetof(struct tuple, proto) },
	{ .type = RTE_ACL_FIELD_TYPE_MASK, .size = 4, .field_index = F_SRC,
	  .input_index = 1, .offset = offsetof(struct tuple, src) },
	{ .type = RTE_ACL_FIELD_TYPE_MASK, .size = 4, .field_index = F_DST,
	  .input_index = 2, .offset = offsetof(struct tuple, dst) },
	{ .type = RTE_ACL_FIELD_TYPE_RANGE, .size = 2, .field_index = F_SPORT,
	  .input_index = 3, .offset = offsetof(struct tuple, sport) },
	{ .type = RTE_ACL_FIELD_TYPE_RANGE, .size = 2, .field_index = F_DPORT,
	  .input_index = 3, .offset = offsetof(struct tuple, dport) },
};

RTE_ACL_RULE_DEF(rule5, F_NUM);

/* rte_acl_classify takes 1 category or a multiple of RTE_ACL_RESULTS_MULTIPLIER. */
#define CATEGORIES RTE_ACL_RESULTS_MULTIPLIER
#define BURST 64

static void fail(const char *what)
{
	fprintf(stderr, "weir-acl: %s\n", what);
	exit(1);
}

static FILE *open_or_fail(const char *path, const char *mode)
{
	FILE *f = fopen(path, mode);
	if (f == NULL) {
		fprintf(stderr, "weir-acl: cannot open %s: %s\n", path, strerror(errno));
		exit(1);
	}
	return f;
}

static void *calloc_or_fail(unsigned long n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	if (p == NULL)
		fail("out of memory");
	return p;
}

/* A file read with fscanf must have been read to its end: a malformed line stops it. */
static void close_read(FILE *f, const char *what)
{
	if (!feof(f)) {
		fprintf(stderr, "weir-acl: malformed line in the %s file\n", what);
		exit(1);
	}
	fclose(f);
}

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static const char *opt(int argc, char **argv, const char *name)
{
	size_t n = strlen(name);
	for (int i = 0; i < argc; i++)
		if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=')
			return argv[i] + n + 1;
	return NULL;
}

static unsigned long num_opt(int argc, char **argv, const char *name)
{
	const char *v = opt(argc, argv, name);
	if (v == NULL) {
		fprintf(stderr, "weir-acl: missing %s\n", name);
		exit(1);
	}
	return strtoul(v, NULL, 10);
}

static const struct {
	const char *name;
	enum rte_acl_classify_alg alg;
} algs[] = {
	{ "scalar", RTE_ACL_CLASSIFY_SCALAR }, { "sse", RTE_ACL_CLASSIFY_SSE },
	{ "avx2", RTE_ACL_CLASSIFY_AVX2 }, { "avx512x16", RTE_ACL_CLASSIFY_AVX512X16 },
	{ "avx512x32", RTE_ACL_CLASSIFY_AVX512X32 },
};

int main(int argc, char **argv)
{
	int eal = rte_eal_init(argc, argv);
	if (eal < 0)
		fail("EAL initialisation failed");
	argc -= eal;
	argv += eal;

	const char *rules_path = opt(argc, argv, "--rulesf");
	const char *trace_path = opt(argc, argv, "--tracef");
	const char *result_path = opt(argc, argv, "--resultf");
	const char *alg_name = opt(argc, argv, "--alg");
	unsigned long rule_cap = num_opt(argc, argv, "--rulenum");
	unsigned long trace_cap = num_opt(argc, argv, "--tracenum");
	unsigned long iter = num_opt(argc, argv, "--iter");
	if (rules_path == NULL || trace_path == NULL || alg_name == NULL)
		fail("--rulesf, --tracef and --alg are required");
	int alg = -1;
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
		if (strcmp(algs[i].name, alg_name) == 0)
			alg = (int)algs[i].alg;
	if (alg < 0)
		fail("unknown --alg");

	/* Rules. */
	FILE *f = open_or_fail(rules_path, "r");
	struct rule5 *rules = calloc_or_fail(rule_cap, sizeof(*rules));
	unsigned long n_rules = 0;
	unsigned cat, prio, user, srclen, dstlen, splo, sphi, dplo, dphi, proto, mask;
	uint32_t src, dst;
	while (fscanf(f, "%u %u %u %" SCNu32 " %u %" SCNu32 " %u %u %u %u %u %u %u", &cat,
		      &prio, &user, &src, &srclen, &dst, &dstlen, &splo, &sphi, &dplo, &dphi,
		      &proto, &mask) == 13) {
		if (n_rules == rule_cap)
			fail("more rules than --rulenum");
		struct rule5 *r = &rules[n_rules++];
		r->data.category_mask = cat;
		r->data.priority = (int32_t)prio;
		r->data.userdata = user;
		r->field[F_PROTO].value.u8 = (uint8_t)proto;
		r->field[F_PROTO].mask_range.u8 = (uint8_t)mask;
		r->field[F_SRC].value.u32 = src;
		r->field[F_SRC].mask_range.u32 = srclen;
		r->field[F_DST].value.u32 = dst;
		r->field[F_DST].mask_range.u32 = dstlen;
		r->field[F_SPORT].value.u16 = (uint16_t)splo;
		r->field[F_SPORT].mask_range.u16 = (uint16_t)sphi;
		r->field[F_DPORT].value.u16 = (uint16_t)dplo;
		r->field[F_DPORT].mask_range.u16 = (uint16_t)dphi;
	}
	close_read(f, "rules");

	/* Trace. */
	f = open_or_fail(trace_path, "r");
	struct tuple *trace = calloc_or_fail(trace_cap, sizeof(*trace));
	unsigned long n_trace = 0;
	unsigned sport, dport, tproto;
	while (fscanf(f, "%" SCNu32 " %" SCNu32 " %u %u %u", &src, &dst, &sport, &dport,
		      &tproto) == 5) {
		if (n_trace == trace_cap)
			fail("more trace lines than --tracenum");
		struct tuple *t = &trace[n_trace++];
		t->proto = (uint8_t)tproto;
		t->src = rte_cpu_to_be_32(src);
		t->dst = rte_cpu_to_be_32(dst);
		t->sport = rte_cpu_to_be_16((uint16_t)sport);
		t->dport = rte_cpu_to_be_16((uint16_t)dport);
	}
	close_read(f, "trace");

	/* Build. */
	double started = now_ns();
	struct rte_acl_param param = {
		.name = "weir-acl",
		.socket_id = SOCKET_ID_ANY,
		.rule_size = RTE_ACL_RULE_SZ(F_NUM),
		.max_rule_num = (uint32_t)(n_rules ? n_rules : 1),
	};
	struct rte_acl_ctx *ctx = rte_acl_create(&param);
	if (ctx == NULL)
		fail("rte_acl_create failed");
	if (n_rules > 0 &&
	    rte_acl_add_rules(ctx, (const struct rte_acl_rule *)rules, (uint32_t)n_rules) != 0)
		fail("rte_acl_add_rules failed");
	struct rte_acl_config cfg = { .num_categories = CATEGORIES, .num_fields = F_NUM };
	memcpy(cfg.defs, defs, sizeof(defs));
	int built = rte_acl_build(ctx, &cfg);
	printf("rte_acl_build(%lu) finished with %d\n", n_rules, built);
	if (built != 0)
		return 1;
	printf("build_ms %.3f\n", (now_ns() - started) / 1e6);
	if (rte_acl_set_ctx_classify(ctx, (enum rte_acl_classify_alg)alg) != 0) {
		printf("failed to setup %s method\n", alg_name);
		return 2;
	}

	/* Classify: every pass over the whole trace, BURST tuples per call. */
	const uint8_t *data[BURST];
	uint32_t results[BURST * CATEGORIES];
	uint32_t *answers = calloc_or_fail(2 * n_trace, sizeof(uint32_t));
	double best = 0;
	uint64_t checksum = 0;
	for (unsigned long pass = 0; pass <= iter; pass++) {
		double t0 = now_ns();
		for (unsigned long at = 0; at < n_trace; at += BURST) {
			unsigned n = (unsigned)(n_trace - at < BURST ? n_trace - at : BURST);
			for (unsigned i = 0; i < n; i++)
				data[i] = (const uint8_t *)&trace[at + i];
			if (rte_acl_classify(ctx, data, results, n, CATEGORIES) != 0)
				fail("rte_acl_classify failed");
			for (unsigned i = 0; i < n; i++) {
				answers[2 * (at + i)] = results[i * CATEGORIES];
				answers[2 * (at + i) + 1] = results[i * CATEGORIES + 1];
			}
		}
		double spent = now_ns() - t0;
		/* Pass 0 warms the caches; the fastest later pass is the figure. */
		if (pass > 0 && (best == 0 || spent < best))
			best = spent;
		checksum += answers[0];
	}
	if (iter == 0 || n_trace == 0)
		fail("nothing timed: --iter and the trace must be non-empty");
	printf("search_ip5tuples: %lu lookups of 2 categories in %.0f ns (%" PRIu64
	       "), %.0f pkt/sec\n",
	       n_trace, best, checksum, (double)n_trace * 1e9 / best);

	if (result_path != NULL) {
		f = open_or_fail(result_path, "w");
		for (unsigned long i = 0; i < n_trace; i++)
			fprintf(f, "%u %u\n", answers[2 * i], answers[2 * i + 1]);
		if (fclose(f) != 0)
			fail("cannot write the result file");
	}
	rte_acl_free(ctx);
	rte_eal_cleanup();
	return 0;
}
