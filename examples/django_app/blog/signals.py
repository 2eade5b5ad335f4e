"""Tell a post's author about each new comment: once the comment is committed, never for one
that was rolled back, and at most once per comment (its idempotency key)."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from blog.models import Comment
from clarion.integrations.django import notify_on_commit


@receiver(post_save, sender=Comment)
def comment_saved(
    sender: type[Comment], instance: Comment, created: bool, **kwargs: object
) -> None:
    post = instance.post
    if not created or instance.author_id == post.author_id:
        return
    notify_on_commit(
        users=[post.author.get_username()],
        type="comment",
        title=f"{instance.author.get_username()} commented on {post.title}",
        body=instance.text[:200],
        actor={"id": str(instance.author_id), "name": instance.author.get_username()},
        url=f"/#post-{post.pk}",
        idempotency_key=f"comment-{instance.pk}",
    )
