/*
 * assets: files built into the daemon (the demo page and the JavaScript client), served on
 * the public listener under /demo/ when server.demo is on. The table is generated at build
 * time from clients/ (cmake/embed.cmake), so the binary needs no files at run time.
 */
#ifndef SIMPLEPUSHD_ASSETS_H
#define SIMPLEPUSHD_ASSETS_H

#include <stddef.h>

struct asset {
    const char *path;         /* URL path, e.g. "/demo/" */
    const char *content_type;
    const unsigned char *data;
    size_t len;
};

/* The generated table, ended by an entry with a NULL path. */
extern const struct asset assets_table[];

/* The asset served at path, or NULL. */
const struct asset *assets_find(const char *path);

#endif
