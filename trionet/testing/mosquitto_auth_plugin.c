/*
 * A mosquitto 2 plugin (plugin interface version 5) for trionet's tests: the broker's side of
 * MQTT 5 enhanced authentication.
 *
 * Methods:
 *   SCRAM-SHA-256, SCRAM-SHA-512  RFC 5802 / RFC 7677 with one user (plugin_opt_user
 *       "name:password", plugin_opt_iterations, default 4096). A second user
 *       (plugin_opt_forged_user "name:password") is authenticated the same way but gets a
 *       wrong server signature: a broker that cannot prove it knows the password.
 *   TRIONET-TEST  misbehaviour on request, chosen by the client's first data (ASCII):
 *       "rounds N"  continue N rounds (each answer is accepted), then succeed;
 *       "big N"     answer with N bytes of authentication data;
 *       "reply HEX" answer with the bytes HEX encodes, then accept whatever comes;
 *       "refuse"    refuse (CONNACK 0x87 "not authorized").
 *
 * Built by trionet.testing.MosquittoServer(auth_plugin=True) with
 *   gcc -shared -fPIC -o plugin.so mosquitto_auth_plugin.c -lcrypto
 * and loaded on two listeners (plain and TLS): one library, initialised once per listener, so
 * the users and exchanges are shared and each listener's identifier travels as its userdata.
 * (Debian packages mosquitto-dev, libmosquitto-dev, libssl-dev). A test fixture, not a broker
 * component: one small table of clients, no user enumeration defence.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define MAX_CLIENTS 64
#define MAX_TEXT 512
#define MAX_HASH 64

struct user {
	char name[128];
	char password[128];
	unsigned char salt[16];
	int set;
};

struct exchange {
	const struct mosquitto *client;
	int kind;             /* 0 free, 1 SCRAM, 2 TRIONET-TEST */
	const EVP_MD *md;
	int forged;
	int rounds_left;
	char first_bare[MAX_TEXT];
	char server_first[MAX_TEXT];
	char nonce[256];
	char username[128];
};

static struct user users[2]; /* [0] the user, [1] the forged user */
static int iterations = 4096;
static struct exchange exchanges[MAX_CLIENTS];

static struct exchange *find(const struct mosquitto *client, int create)
{
	struct exchange *free_slot = NULL;
	for(int i = 0; i < MAX_CLIENTS; i++){
		if(exchanges[i].kind && exchanges[i].client == client) return &exchanges[i];
		if(!exchanges[i].kind && !free_slot) free_slot = &exchanges[i];
	}
	if(create && free_slot){
		memset(free_slot, 0, sizeof(*free_slot));
		free_slot->client = client;
		return free_slot;
	}
	return NULL;
}

static void forget(const struct mosquitto *client)
{
	struct exchange *x = find(client, 0);
	if(x) memset(x, 0, sizeof(*x));
}

/* data_out for the broker, which frees it */
static int give(struct mosquitto_evt_extended_auth *ev, const void *data, size_t len)
{
	if(len > 65535) return MOSQ_ERR_INVAL;
	ev->data_out = mosquitto_malloc(len ? len : 1);
	if(!ev->data_out) return MOSQ_ERR_NOMEM;
	memcpy(ev->data_out, data, len);
	ev->data_out_len = (uint16_t)len;
	return MOSQ_ERR_SUCCESS;
}

static int b64_encode(const unsigned char *in, int len, char *out, size_t out_size)
{
	if((size_t)(4 * ((len + 2) / 3) + 1) > out_size) return -1;
	return EVP_EncodeBlock((unsigned char *)out, in, len);
}

static int b64_decode(const char *in, unsigned char *out, size_t out_size)
{
	size_t len = strlen(in);
	if(len == 0 || len % 4 || (len / 4) * 3 > out_size) return -1;
	int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if(n < 0) return -1;
	if(in[len - 1] == '=') n--;
	if(in[len - 2] == '=') n--;
	return n;
}

/* copy the value of attribute "x=" at the start of *p up to the next comma */
static int take(const char **p, char letter, char *out, size_t out_size)
{
	const char *s = *p;
	if(s[0] != letter || s[1] != '=') return -1;
	s += 2;
	const char *end = strchr(s, ',');
	size_t len = end ? (size_t)(end - s) : strlen(s);
	if(len >= out_size) return -1;
	memcpy(out, s, len);
	out[len] = '\0';
	*p = end ? end + 1 : s + len;
	return 0;
}

static int hmac(const EVP_MD *md, const unsigned char *key, int key_len, const void *msg,
		size_t msg_len, unsigned char *out)
{
	unsigned int n = 0;
	return HMAC(md, key, key_len, msg, msg_len, out, &n) ? (int)n : -1;
}

static int text_of(const struct mosquitto_evt_extended_auth *ev, char *out, size_t out_size)
{
	if(!ev->data_in || ev->data_in_len == 0 || ev->data_in_len >= out_size) return -1;
	memcpy(out, ev->data_in, ev->data_in_len);
	out[ev->data_in_len] = '\0';
	if(strlen(out) != ev->data_in_len) return -1;
	return 0;
}

/* client-first: "n,,n=user,r=nonce" */
static int scram_start(struct mosquitto_evt_extended_auth *ev, struct exchange *x)
{
	char text[MAX_TEXT], user[128], cnonce[200];
	unsigned char random[18];
	char snonce[32], salt64[32];
	const char *p;

	if(text_of(ev, text, sizeof(text)) || strncmp(text, "n,,", 3)) return MOSQ_ERR_AUTH;
	snprintf(x->first_bare, sizeof(x->first_bare), "%s", text + 3);
	p = x->first_bare;
	if(take(&p, 'n', user, sizeof(user)) || take(&p, 'r', cnonce, sizeof(cnonce))) {
		return MOSQ_ERR_AUTH;
	}
	x->forged = -1;
	for(int i = 0; i < 2; i++){
		if(users[i].set && !strcmp(users[i].name, user)) x->forged = i;
	}
	if(x->forged < 0) return MOSQ_ERR_AUTH;
	snprintf(x->username, sizeof(x->username), "%s", user);
	if(RAND_bytes(random, sizeof(random)) != 1) return MOSQ_ERR_UNKNOWN;
	b64_encode(random, sizeof(random), snonce, sizeof(snonce));
	b64_encode(users[x->forged].salt, 16, salt64, sizeof(salt64));
	snprintf(x->nonce, sizeof(x->nonce), "%s%s", cnonce, snonce);
	snprintf(x->server_first, sizeof(x->server_first), "r=%s,s=%s,i=%d", x->nonce, salt64,
			iterations);
	int rc = give(ev, x->server_first, strlen(x->server_first));
	return rc ? rc : MOSQ_ERR_AUTH_CONTINUE;
}

/* client-final: "c=biws,r=nonce,p=proof" */
static int scram_final(struct mosquitto_evt_extended_auth *ev, struct exchange *x)
{
	char text[MAX_TEXT], channel[16], nonce[MAX_TEXT], proof64[200], auth[1400];
	unsigned char salted[MAX_HASH], client_key[MAX_HASH], stored[MAX_HASH], expect[MAX_HASH];
	unsigned char signature[MAX_HASH], proof[MAX_HASH + 3], server_key[MAX_HASH];
	char server_final[200];
	unsigned int stored_len = 0;
	const struct user *u = &users[x->forged];
	int size = EVP_MD_get_size(x->md);
	const char *p;

	if(text_of(ev, text, sizeof(text))) return MOSQ_ERR_AUTH;
	p = text;
	if(take(&p, 'c', channel, sizeof(channel)) || take(&p, 'r', nonce, sizeof(nonce))
			|| take(&p, 'p', proof64, sizeof(proof64)) || *p) return MOSQ_ERR_AUTH;
	if(strcmp(channel, "biws") || strcmp(nonce, x->nonce)) return MOSQ_ERR_AUTH;
	if(b64_decode(proof64, proof, sizeof(proof)) != size) return MOSQ_ERR_AUTH;
	snprintf(auth, sizeof(auth), "%s,%s,c=biws,r=%s", x->first_bare, x->server_first, x->nonce);

	if(PKCS5_PBKDF2_HMAC(u->password, (int)strlen(u->password), u->salt, 16, iterations,
				x->md, size, salted) != 1) return MOSQ_ERR_UNKNOWN;
	if(hmac(x->md, salted, size, "Client Key", 10, client_key) != size) return MOSQ_ERR_UNKNOWN;
	if(EVP_Digest(client_key, (size_t)size, stored, &stored_len, x->md, NULL) != 1) {
		return MOSQ_ERR_UNKNOWN;
	}
	if(hmac(x->md, stored, size, auth, strlen(auth), signature) != size) return MOSQ_ERR_UNKNOWN;
	/* the proof XOR the client signature is the client key: its hash must be the stored key */
	for(int i = 0; i < size; i++) proof[i] ^= signature[i];
	if(EVP_Digest(proof, (size_t)size, expect, &stored_len, x->md, NULL) != 1) {
		return MOSQ_ERR_UNKNOWN;
	}
	if(CRYPTO_memcmp(expect, stored, (size_t)size)) return MOSQ_ERR_AUTH;

	if(hmac(x->md, salted, size, "Server Key", 10, server_key) != size) return MOSQ_ERR_UNKNOWN;
	if(hmac(x->md, server_key, size, auth, strlen(auth), signature) != size) {
		return MOSQ_ERR_UNKNOWN;
	}
	if(x->forged) signature[0] ^= 0x01;
	memcpy(server_final, "v=", 2);
	if(b64_encode(signature, size, server_final + 2, sizeof(server_final) - 2) < 0) {
		return MOSQ_ERR_UNKNOWN;
	}
	mosquitto_set_username(ev->client, x->username);
	x->kind = 0;
	return give(ev, server_final, strlen(server_final));
}

static int test_method(struct mosquitto_evt_extended_auth *ev, struct exchange *x, int start)
{
	char text[MAX_TEXT];
	if(!start){
		if(x->rounds_left > 0){
			x->rounds_left--;
			int rc = give(ev, "more", 4);
			return rc ? rc : MOSQ_ERR_AUTH_CONTINUE;
		}
		x->kind = 0;
		return give(ev, "welcome", 7);
	}
	if(text_of(ev, text, sizeof(text))) return MOSQ_ERR_AUTH;
	if(!strncmp(text, "rounds ", 7)){
		x->rounds_left = atoi(text + 7);
		return test_method(ev, x, 0);
	}
	if(!strncmp(text, "big ", 4)){
		size_t n = (size_t)atol(text + 4);
		char *big = malloc(n ? n : 1);
		if(!big) return MOSQ_ERR_NOMEM;
		memset(big, 'x', n);
		int rc = give(ev, big, n);
		free(big);
		return rc ? rc : MOSQ_ERR_AUTH_CONTINUE;
	}
	if(!strncmp(text, "reply ", 6)){
		unsigned char bytes[MAX_TEXT / 2];
		size_t n = 0;
		for(const char *h = text + 6; h[0] && h[1] && n < sizeof(bytes); h += 2){
			unsigned int v;
			if(sscanf(h, "%2x", &v) != 1) return MOSQ_ERR_AUTH;
			bytes[n++] = (unsigned char)v;
		}
		int rc = give(ev, bytes, n);
		return rc ? rc : MOSQ_ERR_AUTH_CONTINUE;
	}
	return MOSQ_ERR_AUTH; /* "refuse", or anything else */
}

static int on_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_extended_auth *ev = event_data;
	const char *method = ev->auth_method;
	struct exchange *x;
	int rc;
	(void)userdata;

	if(event == MOSQ_EVT_EXT_AUTH_CONTINUE){
		/* (mosquitto 2.0 passes no method here: the exchange started says which) */
		x = find(ev->client, 0);
		if(!x) return MOSQ_ERR_PLUGIN_DEFER;
		rc = x->kind == 1 ? scram_final(ev, x) : test_method(ev, x, 0);
	}else{
		const EVP_MD *md = NULL;
		if(!method) return MOSQ_ERR_PLUGIN_DEFER;
		if(!strcmp(method, "SCRAM-SHA-256")) md = EVP_sha256();
		else if(!strcmp(method, "SCRAM-SHA-512")) md = EVP_sha512();
		else if(strcmp(method, "TRIONET-TEST")) return MOSQ_ERR_PLUGIN_DEFER;
		forget(ev->client);
		x = find(ev->client, 1);
		if(!x) return MOSQ_ERR_AUTH;
		x->kind = md ? 1 : 2;
		x->md = md;
		rc = md ? scram_start(ev, x) : test_method(ev, x, 1);
	}
	if(rc != MOSQ_ERR_AUTH_CONTINUE) forget(ev->client);
	return rc;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ev = event_data;
	(void)event;
	(void)userdata;
	forget(ev->client);
	return MOSQ_ERR_SUCCESS;
}

static int set_user(struct user *u, const char *value)
{
	const char *colon = strchr(value, ':');
	if(!colon || (size_t)(colon - value) >= sizeof(u->name) || strlen(colon + 1) >= sizeof(u->password)) {
		return MOSQ_ERR_INVAL;
	}
	if(u->set) return MOSQ_ERR_SUCCESS; /* (the other listener's instance set it) */
	memcpy(u->name, value, (size_t)(colon - value));
	u->name[colon - value] = '\0';
	strcpy(u->password, colon + 1);
	if(RAND_bytes(u->salt, sizeof(u->salt)) != 1) return MOSQ_ERR_UNKNOWN;
	u->set = 1;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	*userdata = identifier;
	for(int i = 0; i < option_count; i++){
		int rc = MOSQ_ERR_SUCCESS;
		if(!strcmp(options[i].key, "user")) rc = set_user(&users[0], options[i].value);
		else if(!strcmp(options[i].key, "forged_user")) rc = set_user(&users[1], options[i].value);
		else if(!strcmp(options[i].key, "iterations")) iterations = atoi(options[i].value);
		if(rc) return rc;
	}
	if(iterations < 1) return MOSQ_ERR_INVAL;
	int rc = mosquitto_callback_register(identifier, MOSQ_EVT_EXT_AUTH_START, on_auth, NULL, NULL);
	if(!rc) rc = mosquitto_callback_register(identifier, MOSQ_EVT_EXT_AUTH_CONTINUE, on_auth, NULL, NULL);
	if(!rc) rc = mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL);
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	mosquitto_plugin_id_t *identifier = userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(identifier, MOSQ_EVT_EXT_AUTH_START, on_auth, NULL);
	mosquitto_callback_unregister(identifier, MOSQ_EVT_EXT_AUTH_CONTINUE, on_auth, NULL);
	mosquitto_callback_unregister(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	return MOSQ_ERR_SUCCESS;
}
