from django.conf import settings
from django.contrib.auth import authenticate, login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template import engines
from django.views.decorators.http import require_POST

from blog.models import Comment, Post

PAGE = engines["django"].from_string("""<!doctype html><meta charset="utf-8"><title>Blog</title>
<header style="display: flex; gap: 1rem; font: 16px system-ui">
  <strong>Signed in as {{ user.get_username }}</strong>
  <clarion-inbox server="{{ clarion }}"></clarion-inbox>
</header>
{% for post in posts %}
  <article id="post-{{ post.pk }}"><h2>{{ post.title }} <small>by {{ post.author }}</small></h2>
  {% for c in post.comments.all %}<p>{{ c.author }}: {{ c.text }}</p>{% endfor %}
  <form method="post" action="/posts/{{ post.pk }}/comments">{% csrf_token %}
    <input name="text" required><button>Comment</button></form></article>
{% endfor %}
<script type="module">
  import '{{ clarion }}/static/clarion-inbox.js';
  document.querySelector('clarion-inbox').getToken = async () =>
    (await (await fetch('/clarion-token')).json()).token;
</script>""")
LOGIN = engines["django"].from_string("""<!doctype html><meta charset="utf-8"><title>Sign in</title>
<form method="post">{% csrf_token %}<input name="username" placeholder="alice or bob">
<input name="password" type="password" placeholder="demo"><button>Sign in</button></form>""")


@login_required(login_url="/login")
def home(request: HttpRequest) -> HttpResponse:
    context = {"posts": Post.objects.all(), "clarion": settings.CLARION["URL"]}
    return HttpResponse(PAGE.render(context, request))


def login_view(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        user = authenticate(
            request, username=request.POST["username"], password=request.POST["password"]
        )
        if user is not None:
            login(request, user)
            return redirect("home")
    return HttpResponse(LOGIN.render({}, request))


@require_POST
@login_required(login_url="/login")
def comment(request: HttpRequest, post_id: int) -> HttpResponse:
    post = get_object_or_404(Post, pk=post_id)
    Comment.objects.create(post=post, author=request.user, text=request.POST["text"])
    return redirect("home")
