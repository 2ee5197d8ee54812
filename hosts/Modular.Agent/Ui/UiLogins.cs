using System.Security.Cryptography;

namespace Modular.Agent.Ui;

/// <summary>
/// Who may use the local UI: the same people as the CLI. <c>modular ui</c> (over the CLI socket, 0660: root and the
/// socket's group) asks the daemon for a sign-in link; the link's token works once, within <see cref="TokenLifetime"/>,
/// and turns into a session cookie (HttpOnly, SameSite=Strict) that the UI requires on every other request. Tokens
/// and sessions live in memory only (a restarted daemon needs a new link) and are kept as SHA-256 hashes, compared
/// by lookup of the hash, so neither a timing difference nor a memory dump of this table gives a usable value.
/// Times come from the injected <see cref="TimeProvider"/>.
/// </summary>
internal sealed class UiLogins(TimeProvider time)
{
    /// <summary>How long a sign-in link works (once).</summary>
    public static readonly TimeSpan TokenLifetime = TimeSpan.FromSeconds(60);

    /// <summary>How long a signed-in browser stays signed in.</summary>
    public static readonly TimeSpan SessionLifetime = TimeSpan.FromHours(12);

    /// <summary>The session cookie's name.</summary>
    public const string CookieName = "modular_ui";

    // Unused links and sessions kept at most; the oldest go first (a flood of `modular ui` cannot grow memory).
    private const int MaxEntries = 32;

    private readonly Lock _lock = new();
    private readonly Dictionary<string, DateTimeOffset> _tokens = new(StringComparer.Ordinal);
    private readonly Dictionary<string, DateTimeOffset> _sessions = new(StringComparer.Ordinal);
    private volatile string? _baseUrl;

    /// <summary>The UI's address (<c>http://127.0.0.1:9091/</c>) while it runs; null when it is off or did not start.</summary>
    public string? BaseUrl
    {
        get => _baseUrl;
        set => _baseUrl = value;
    }

    /// <summary>A new single-use sign-in token, valid for <see cref="TokenLifetime"/>.</summary>
    public string IssueToken()
    {
        var token = NewSecret();
        lock (_lock)
        {
            Add(_tokens, Hash(token), time.GetUtcNow() + TokenLifetime);
        }

        return token;
    }

    /// <summary>Spends <paramref name="token"/>: a new session id when it is known and unexpired (never twice), else null.</summary>
    public string? Redeem(string? token)
    {
        if (string.IsNullOrEmpty(token) || token.Length > 128)
        {
            return null;
        }

        var now = time.GetUtcNow();
        lock (_lock)
        {
            var key = Hash(token);
            if (!_tokens.Remove(key, out var expires) || expires <= now)
            {
                return null;
            }

            var session = NewSecret();
            Add(_sessions, Hash(session), now + SessionLifetime);
            return session;
        }
    }

    /// <summary>Whether <paramref name="session"/> (the cookie's value) names a live session.</summary>
    public bool IsSignedIn(string? session)
    {
        if (string.IsNullOrEmpty(session) || session.Length > 128)
        {
            return false;
        }

        lock (_lock)
        {
            return _sessions.TryGetValue(Hash(session), out var expires) && expires > time.GetUtcNow();
        }
    }

    private void Add(Dictionary<string, DateTimeOffset> table, string key, DateTimeOffset expires)
    {
        var now = time.GetUtcNow();
        foreach (var stale in table.Where(e => e.Value <= now).Select(e => e.Key).ToList())
        {
            table.Remove(stale);
        }

        while (table.Count >= MaxEntries)
        {
            table.Remove(table.MinBy(e => e.Value).Key);
        }

        table[key] = expires;
    }

    private static string NewSecret() => Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private static string Hash(string secret) => Convert.ToHexString(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(secret)));
}
