/*
 * list.h: the one intrusive doubly-linked list. A list is a head (struct
 * tycho_list, set up by tycho_list_init) and nodes embedded in the objects it
 * links; tycho_container_of gets the object back from its node. Circular with
 * the head as sentinel, so insert and remove never test for an end. A node
 * that is in no list points at itself (tycho_list_init on it, and after
 * tycho_list_remove), so removing twice is harmless and tycho_list_linked
 * says whether it is in a list. No allocation; not thread-safe (the owner's
 * thread only, as every list here).
 */
#ifndef TYCHO_LIST_H
#define TYCHO_LIST_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>

struct tycho_list {
    struct tycho_list *prev, *next;
};

/* The object of type `type` whose member `member` is at ptr. */
#define tycho_container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* An empty list, or a node in no list. */
static inline void tycho_list_init(struct tycho_list *l)
{
    l->prev = l->next = l;
}

static inline bool tycho_list_empty(const struct tycho_list *head)
{
    assert(head->next && "list used before tycho_list_init");
    return head->next == head;
}

/* Whether node is in a list (it was inited or removed since, else inserted). */
static inline bool tycho_list_linked(const struct tycho_list *node)
{
    return node->next != node;
}

static inline void tycho_list_insert_after(struct tycho_list *at, struct tycho_list *node)
{
    assert(!tycho_list_linked(node) || !node->next);
    node->prev = at;
    node->next = at->next;
    at->next->prev = node;
    at->next = node;
}

/* Inserts node first (push_front) or last (push_back). */
static inline void tycho_list_push_front(struct tycho_list *head, struct tycho_list *node)
{
    tycho_list_insert_after(head, node);
}

static inline void tycho_list_push_back(struct tycho_list *head, struct tycho_list *node)
{
    tycho_list_insert_after(head->prev, node);
}

/* Takes node out of its list (a no-op for a node in none); it is then in none. */
static inline void tycho_list_remove(struct tycho_list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    tycho_list_init(node);
}

/* The first or last node, or NULL when the list is empty. */
static inline struct tycho_list *tycho_list_first(const struct tycho_list *head)
{
    return tycho_list_empty(head) ? NULL : head->next;
}

static inline struct tycho_list *tycho_list_last(const struct tycho_list *head)
{
    return tycho_list_empty(head) ? NULL : head->prev;
}

/* Each node from first to last; `next` lets the body remove `node`. */
#define tycho_list_each_safe(node, next, head)                                         \
    for ((node) = (head)->next, (next) = (node)->next; (node) != (head);               \
         (node) = (next), (next) = (node)->next)

#endif
