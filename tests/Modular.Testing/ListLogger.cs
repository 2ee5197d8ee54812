using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Modular.Testing;

/// <summary>Records log entries so tests can check what was warned about, and how often.</summary>
public sealed class ListLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, string Message)> Entries { get; } = new();

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        => Entries.Enqueue((logLevel, formatter(state, exception)));

    public IReadOnlyList<string> Warnings => Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Message).ToList();

    public IReadOnlyList<string> Errors => Entries.Where(e => e.Level >= LogLevel.Error).Select(e => e.Message).ToList();
}
