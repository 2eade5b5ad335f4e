"""Topics: users follow and unfollow them; publishers manage subscriptions.

Who may follow a topic: a user whose token's `topics` claim covers it (names or patterns such
as `project:*`), or one the publisher subscribed (`PUT /v1/topics/{topic:path}/subscribers`).
A follow starts at the topic's current position: earlier notifications stay out of the inbox.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from clarion.api.deps import get_node, publisher, user
from clarion.auth import Principal
from clarion.domain import ApiKey
from clarion.models import (
    FollowOut,
    SubscribersIn,
    SubscribersOut,
    TopicFollow,
    TopicsOut,
)
from clarion.node import Node
from clarion.streams import topic_of, topic_stream

router = APIRouter(prefix="/v1", tags=["topics"])
Topic = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@/+=-]+$")]


@router.get("/me/topics", response_model=TopicsOut)
async def my_topics(me: Principal = Depends(user), node: Node = Depends(get_node)) -> TopicsOut:
    """The topics the user follows now."""
    rows = await node.store.followed(me.user)
    return TopicsOut(topics=[TopicFollow(topic=topic_of(s) or s, granted=g) for s, g in rows])


@router.put("/me/topics/{topic:path}", response_model=FollowOut)
async def follow(
    topic: Topic, me: Principal = Depends(user), node: Node = Depends(get_node)
) -> FollowOut:
    """Follow a topic (403 unless the token's `topics` claim or a publisher allows it). The
    user's open connections start receiving it at once."""
    await node.follow(me, topic)
    return FollowOut(topic=topic, following=True)


@router.delete("/me/topics/{topic:path}", response_model=FollowOut)
async def unfollow(
    topic: Topic, me: Principal = Depends(user), node: Node = Depends(get_node)
) -> FollowOut:
    """Stop following: nothing new arrives; what came before stays in the inbox."""
    await node.unfollow(me.user, topic)
    return FollowOut(topic=topic, following=False)


@router.get("/topics/{topic:path}/subscribers", response_model=SubscribersOut)
async def subscribers(
    topic: Topic,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")] = None,
    _: ApiKey = Depends(publisher),
    node: Node = Depends(get_node),
) -> SubscribersOut:
    """Who follows the topic now, by user id; pass `next_cursor` for the next page."""
    users = await node.store.followers(topic_stream(topic), cursor, limit + 1)
    more = len(users) > limit
    users = users[:limit]
    return SubscribersOut(topic=topic, users=users, next_cursor=users[-1] if more else None)


@router.put("/topics/{topic:path}/subscribers", response_model=SubscribersOut)
async def subscribe(
    topic: Topic,
    body: SubscribersIn,
    _: ApiKey = Depends(publisher),
    node: Node = Depends(get_node),
) -> SubscribersOut:
    """Subscribe users (and allow them to follow again after they unfollow)."""
    await node.subscribe(body.users, topic, True)
    return SubscribersOut(topic=topic, users=body.users)


@router.post("/topics/{topic:path}/subscribers/remove", response_model=SubscribersOut)
async def unsubscribe(
    topic: Topic,
    body: SubscribersIn,
    _: ApiKey = Depends(publisher),
    node: Node = Depends(get_node),
) -> SubscribersOut:
    """Unsubscribe users and withdraw the publisher's permission."""
    await node.subscribe(body.users, topic, False)
    return SubscribersOut(topic=topic, users=body.users)
