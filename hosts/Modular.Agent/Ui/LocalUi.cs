using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Modular.Agent.Cli;
using Modular.Agent.Hosting;
using Modular.Agent.Status;
using Modular.Core.Config;
using Modular.Core.Status;
using Serilog;

namespace Modular.Agent.Ui;

/// <summary>
/// The local web UI (<c>[ui] listen</c>, default 127.0.0.1:9091): the agent's status and the lazy-connections switch.
/// It is for those the CLI is for: every request but the sign-in link needs the session cookie that link sets, and
/// only <c>modular ui</c>, over the CLI socket (0660), hands out links (<see cref="UiLogins"/>); anything else is 401.
/// It also listens on a loopback address only, answers only requests addressed to it by that name (a page elsewhere
/// cannot reach it through DNS rebinding) and changes settings only on a JSON PUT from its own origin (a cross-site
/// form or script cannot send one without a preflight it never answers; the cookie is SameSite=Strict besides). A UI
/// that cannot start (port taken, bad address) is a warning: the VPN runs on without it.
/// </summary>
internal sealed class LocalUi : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly StatusRecorder _recorder;
    private readonly FeatureSwitches _switches;
    private readonly UiSettingsFile _settings;
    private readonly string? _pinnedBy;
    private readonly Serilog.ILogger _logger;
    private readonly HashSet<string> _hosts;
    private readonly UiLogins _logins;

    private LocalUi(WebApplication app, IPEndPoint endpoint, StatusRecorder recorder, FeatureSwitches switches, UiSettingsFile settings, string? pinnedBy, Serilog.ILogger logger, UiLogins logins)
    {
        _app = app;
        _logins = logins;
        _recorder = recorder;
        _switches = switches;
        _settings = settings;
        _pinnedBy = pinnedBy;
        _logger = logger;
        var port = endpoint.Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var address = endpoint.Address.ToString();
        _hosts = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
        {
            $"localhost:{port}",
            endpoint.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]:{port}" : $"{address}:{port}",
        };
    }

    /// <summary>
    /// Starts the UI on <paramref name="listen"/>; null (after a warning) when it is off, not a loopback address, or
    /// the port is taken. <paramref name="pinnedBy"/> names the flag or variable that fixed lazy connections, if any:
    /// the UI then shows the switch but cannot change it.
    /// </summary>
    public static async Task<LocalUi?> StartAsync(ListenConfig listen, StatusRecorder recorder, FeatureSwitches switches, UiSettingsFile settings,
        string? pinnedBy, Serilog.ILogger logger, UiLogins logins, CancellationToken cancellationToken)
    {
        if (!listen.Enabled)
        {
            recorder.SetUi(EndpointStatus.Off);
            return null;
        }

        // The config loader refuses such an address already (file:line:col); this guards configs built in code.
        if (!IPEndPoint.TryParse(listen.Listen, out var endpoint) || !IPAddress.IsLoopback(endpoint.Address))
        {
            return NotStarted(recorder, logger, listen.Listen, $"[ui] listen = {listen.Listen} is not a loopback address and port");
        }

        recorder.SetUi(new EndpointStatus(listen.Listen, false, null));

        var builder = LocalHttpEndpoint.CreateBuilder(endpoint, maxRequestBodySize: 4096);
        var app = builder.Build();
        var ui = new LocalUi(app, endpoint, recorder, switches, settings, pinnedBy, logger, logins);
        app.Use(ui.GuardAsync);
        app.MapGet(LoginPath, ui.LoginAsync);
        app.MapGet("/", ui.PageAsync);
        app.MapGet("/api/status", ui.StatusAsync);
        app.MapGet("/api/view", ui.ViewAsync);
        app.MapGet("/api/settings", ui.SettingsAsync);
        app.MapPut("/api/settings", ui.ChangeSettingsAsync);
        var problem = await LocalHttpEndpoint.StartAsync(app, listen.Listen,
            $"{listen.Listen} is taken by another program: set [ui] listen to a free loopback address and port, or \"\" to turn the UI off",
            cancellationToken);
        if (problem is not null)
        {
            return NotStarted(recorder, logger, listen.Listen, problem);
        }

        recorder.SetUi(new EndpointStatus(listen.Listen, true, null));
        logins.BaseUrl = $"http://{listen.Listen}/";
        logger.Information("Local UI on http://{Listen}/ (sign in with `modular ui`)", listen.Listen);
        return ui;
    }

    private static LocalUi? NotStarted(StatusRecorder recorder, Serilog.ILogger logger, string listen, string why)
    {
        logger.Warning("Local UI not started: {Problem}", why);
        recorder.SetUi(new EndpointStatus(listen, false, why));
        return null;
    }

    /// <summary>The sign-in link's path; its query carries the one-time token.</summary>
    public const string LoginPath = "/login";

    private async Task GuardAsync(HttpContext context, RequestDelegate next)
    {
        if (!_hosts.Contains(context.Request.Host.Value ?? ""))
        {
            context.Response.StatusCode = StatusCodes.Status403Forbidden;
            await context.Response.WriteAsync("requests must be addressed to the UI's own loopback address\n");
            return;
        }

        context.Response.Headers.CacheControl = "no-store";
        context.Response.Headers["Referrer-Policy"] = "no-referrer";
        if (context.Request.Path != LoginPath && !_logins.IsSignedIn(context.Request.Cookies[UiLogins.CookieName]))
        {
            await ProblemAsync(context, StatusCodes.Status401Unauthorized, NotSignedIn);
            return;
        }

        await next(context);
    }

    private const string NotSignedIn = "not signed in: run `modular ui` (as root or a member of the CLI socket's group) and open the link it prints";

    /// <summary>The sign-in link: a good token (once, while fresh) becomes the session cookie, then the page.</summary>
    private async Task LoginAsync(HttpContext context)
    {
        // The token is never logged: not here, and Kestrel's request logging is off (ClearProviders).
        if (_logins.Redeem(context.Request.Query["token"].ToString()) is not { } session)
        {
            await ProblemAsync(context, StatusCodes.Status401Unauthorized, "this sign-in link is unknown, used or expired: run `modular ui` for a new one");
            return;
        }

        context.Response.Cookies.Append(UiLogins.CookieName, session, new CookieOptions
        {
            HttpOnly = true,
            SameSite = SameSiteMode.Strict,
            Path = "/",
            MaxAge = UiLogins.SessionLifetime,
        });
        _logger.Information("Local UI: a browser signed in");
        context.Response.Redirect("/"); // drops the token from the address bar and history
    }

    private Task PageAsync(HttpContext context)
    {
        context.Response.ContentType = "text/html; charset=utf-8";
        context.Response.Headers.ContentSecurityPolicy = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'";
        context.Response.Headers.XFrameOptions = "DENY";
        return context.Response.WriteAsync(UiPage.Html);
    }

    private Task StatusAsync(HttpContext context)
    {
        context.Response.ContentType = "application/json";
        context.Response.Headers.CacheControl = "no-store";
        return context.Response.WriteAsync(StatusJson.Serialize(_recorder.Snapshot()));
    }

    /// <summary>
    /// What `status -d` shows, as the CLI lays it out (<see cref="StatusText.Build"/>: one way to word each thing), in rows
    /// the page puts into tables: <c>{"rows": [{"label", "value", "nested", "header"}], "peers": [{"name", "ip", "state",
    /// "fields": [{"label", "value"}]}]}</c>. The page sets every value as text, never as markup.
    /// </summary>
    private Task ViewAsync(HttpContext context)
    {
        var status = _recorder.Snapshot();
        var view = StatusText.Build(status, status.Peers.Count, status.Peers.Count(p => p.State == Modular.Abstractions.Peers.PeerConnectionState.Connected),
            detail: true, TimeProvider.System.GetUtcNow(), status.Peers.Count(p => p.State == Modular.Abstractions.Peers.PeerConnectionState.Idle));
        context.Response.ContentType = "application/json";
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteStartArray("rows");
            foreach (var row in view.Rows)
            {
                writer.WriteStartObject();
                writer.WriteString("label", row.Label);
                writer.WriteString("value", row.Value);
                writer.WriteBoolean("nested", row.Nested);
                writer.WriteBoolean("header", row.Header);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            writer.WriteStartArray("peers");
            foreach (var peer in view.Peers)
            {
                writer.WriteStartObject();
                writer.WriteString("name", peer.Name);
                writer.WriteString("ip", peer.Ip);
                writer.WriteString("state", peer.State.ToString());
                writer.WriteStartArray("fields");
                foreach (var field in peer.Fields)
                {
                    writer.WriteStartObject();
                    writer.WriteString("label", field.Label);
                    writer.WriteString("value", field.Value);
                    writer.WriteEndObject();
                }

                writer.WriteEndArray();
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            writer.WriteEndObject();
        }

        return context.Response.Body.WriteAsync(buffer.ToArray()).AsTask();
    }

    private Task SettingsAsync(HttpContext context) => WriteSettingsAsync(context);

    private async Task ChangeSettingsAsync(HttpContext context)
    {
        var request = context.Request;
        if (request.Headers.Origin is { Count: > 0 } origin && !_hosts.Contains(StripScheme(origin.ToString())))
        {
            await ProblemAsync(context, StatusCodes.Status403Forbidden, "changes come only from the UI's own page");
            return;
        }

        if (!string.Equals(request.ContentType?.Split(';')[0].Trim(), "application/json", StringComparison.OrdinalIgnoreCase))
        {
            await ProblemAsync(context, StatusCodes.Status415UnsupportedMediaType, "send {\"lazy_connections\": true|false} as application/json");
            return;
        }

        bool enabled;
        try
        {
            using var document = await JsonDocument.ParseAsync(request.Body, cancellationToken: context.RequestAborted);
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("lazy_connections", out var value)
                || value.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
            {
                await ProblemAsync(context, StatusCodes.Status400BadRequest, "expected {\"lazy_connections\": true|false}");
                return;
            }

            enabled = value.GetBoolean();
        }
        catch (Exception e) when (e is JsonException or Microsoft.AspNetCore.Http.BadHttpRequestException)
        {
            await ProblemAsync(context, StatusCodes.Status400BadRequest, "expected {\"lazy_connections\": true|false}");
            return;
        }

        if (_pinnedBy is not null)
        {
            await ProblemAsync(context, StatusCodes.Status409Conflict, $"lazy connections are set by {_pinnedBy}, which wins over the UI");
            return;
        }

        try
        {
            _settings.SaveLazyConnections(enabled);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _logger.Warning("Local UI: could not save {Path}: {Problem}", _settings.Path, e.Message);
            await ProblemAsync(context, StatusCodes.Status500InternalServerError, $"could not save the setting: {e.Message}");
            return;
        }

        _switches.SetLazyConnections(enabled);
        _recorder.UpdateFeatures(f => f with { LazyConnections = enabled, LazyConnectionsSource = FeatureSource.Ui });
        _logger.Information("Local UI: lazy connections switched {State}", enabled ? "on" : "off");
        await WriteSettingsAsync(context);
    }

    private Task WriteSettingsAsync(HttpContext context)
    {
        context.Response.ContentType = "application/json";
        context.Response.Headers.CacheControl = "no-store";
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteBoolean("lazy_connections", _recorder.Snapshot().Features.LazyConnections);
            writer.WriteString("source", _pinnedBy ?? (_switches.LazyConnections is null ? "config or account" : "ui"));
            writer.WriteBoolean("editable", _pinnedBy is null);
            writer.WriteEndObject();
        }

        return context.Response.WriteAsync(Encoding.UTF8.GetString(buffer.ToArray()));
    }

    private static async Task ProblemAsync(HttpContext context, int status, string message)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("error", message);
            writer.WriteEndObject();
        }

        await context.Response.Body.WriteAsync(buffer.ToArray());
    }

    private static string StripScheme(string origin)
        => origin.StartsWith("http://", StringComparison.OrdinalIgnoreCase) ? origin["http://".Length..] : origin;

    public async ValueTask DisposeAsync()
    {
        _logins.BaseUrl = null;
        _recorder.SetUi(_recorder.Snapshot().Ui with { Serving = false });
        await _app.StopAsync(CancellationToken.None);
        await _app.DisposeAsync();
    }
}
