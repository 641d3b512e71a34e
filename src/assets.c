/*
 * assets: lookup in the table of built-in files (generated, see cmake/embed.cmake).
 */
#include "simplepushd/assets.h"

#include <string.h>

const struct asset *assets_find(const char *path)
{
    for (const struct asset *a = assets_table; a->path; a++)
        if (!strcmp(a->path, path))
            return a;
    return NULL;
}
