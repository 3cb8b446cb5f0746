/* SPDX-License-Identifier: MIT */
/*
 * pb_int.h - the p2p module's one protobuf-c allocator. Every message this module packs or
 * unpacks (noise payload, identify, kad, infer, IPNS, signed records) allocates through
 * dc_malloc/dc_free, so the allocation-failure tests reach protobuf-c's allocations too.
 */
#ifndef DC_P2P_PB_INT_H
#define DC_P2P_PB_INT_H

#include <protobuf-c/protobuf-c.h>

extern ProtobufCAllocator dc_pb_allocator;

#endif
