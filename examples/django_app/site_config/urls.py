from blog import views
from django.urls import path

from clarion.integrations.django import token_view

urlpatterns = [
    path("", views.home, name="home"),
    path("login", views.login_view, name="login"),
    path("posts/<int:post_id>/comments", views.comment, name="comment"),
    path("clarion-token", token_view),  # the browser's getToken asks here
]
