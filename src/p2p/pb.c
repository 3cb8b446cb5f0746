/* SPDX-License-Identifier: MIT */
/*
 * pb.c - the protobuf-c allocator shared by p2p and the modules above it (pb.h).
 */
#include "p2p/pb.h"

#include "base/base.h"

static void *pb_alloc(void *ud, size_t n)
{
    DC_UNUSED(ud);
    return dc_malloc(n);
}

static void pb_free(void *ud, void *p)
{
    DC_UNUSED(ud);
    dc_free(p);
}

ProtobufCAllocator dc_pb_allocator = {.alloc = pb_alloc, .free = pb_free, .allocator_data = NULL};

int dc_pb_unpack_error(size_t len)
{
    void *probe = dc_malloc(len + 64);
    int rc = probe == NULL ? DC_ENOMEM : DC_ECORRUPT;

    dc_free(probe);
    return rc;
}
