/* SPDX-License-Identifier: MIT */
/*
 * pb.c - the protobuf-c allocator shared by the p2p module (pb_int.h).
 */
#include "p2p/pb_int.h"

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
