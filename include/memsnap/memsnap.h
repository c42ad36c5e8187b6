/*
 * memsnap.h - the public header: the version. The library's module APIs live
 * next to their modules in src/ until the daemon's client API settles here.
 */
#ifndef MEMSNAP_H
#define MEMSNAP_H

#define MEMSNAP_VERSION "0.1.0"

#endif
